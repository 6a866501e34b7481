"""A wide labelled set from a 16:9 one: the same frames cut to a horizontal band (KITTI-like 3.3:1), labels clipped.

    python bench/wide_band.py ../shared/data/pandaset_002/left_camera --rows 200 490 --out runs/left_band
    python bench/tiles_ablation.py --data runs/left_band --tiles off,auto,3x2+full

`--tiles auto` only tiles frames at least cfg.TILE_AUTO_ASPECT times wider than tall, and KITTI is the only
such labelled set here, and our far test. A band of the held-out PandaSet camera is a second wide set with
real labels, to check a tiling choice on something other than KITTI. A label keeps what shows of it inside
the band when that is at least half its height (else it is dropped; the model may still find the car, which
then counts against it). Images are written as JPEG quality 95 into a new (or empty) folder; the source
folder is never written to.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2

from fastyolo.datasets import load_dataset
from fastyolo.errors import FastYoloError
from fastyolo.layout import CLASS_NAMES

KEEP = 0.5  # a label stays when at least this share of its height is inside the band


def write_band(source: Path, top: int, bottom: int, out: Path) -> tuple[int, int, int]:
    """Write out/images/* and out/labels.csv; returns (frames, labels kept, labels dropped)."""
    samples, _report = load_dataset(source)
    if not samples:
        raise FastYoloError(f"{source}: no labelled frames")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise FastYoloError(f"--out {out} is inside {source}: the source is never written to")
    if out.exists() and any(out.iterdir()):
        raise FastYoloError(f"--out {out} is not empty: give a new folder (nothing there is overwritten)")
    if not 0 <= top < bottom <= min(s.height for s in samples):
        raise FastYoloError(f"--rows {top} {bottom}: need 0 <= top < bottom <= the frames' height")
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, dropped = [], 0
    for s in samples:
        frame = cv2.imread(str(s.image_path))
        if frame is None:
            raise FastYoloError(f"{s.image_path}: not an image OpenCV can read")
        name = Path(s.image_path).stem + ".jpg"
        if not cv2.imwrite(str(out / "images" / name), frame[top:bottom], [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise FastYoloError(f"cannot write {out / 'images' / name}")
        for (x1, y1, x2, y2), c in zip(s.boxes, s.class_ids, strict=True):
            inside = min(y2, bottom) - max(y1, top)
            if inside < KEEP * (y2 - y1):
                dropped += 1
                continue
            rows.append([round(float(x1)), round(max(y1, top) - top), round(float(x2)),
                         round(min(y2, bottom) - top), name, CLASS_NAMES[int(c)], ""])
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["xmin", "ymin", "xmax", "ymax", "Frame", "Label", "Preview URL"], *rows])
    return len(samples), len(rows), dropped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="a labelled folder (labels.csv or label_2/)")
    p.add_argument("--rows", type=int, nargs=2, required=True, metavar=("TOP", "BOTTOM"),
                   help="the band: pixel rows TOP (included) to BOTTOM (excluded) of every frame")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    try:
        frames, kept, dropped = write_band(args.source, *args.rows, args.out)
    except (FastYoloError, OSError) as exc:
        sys.exit(f"bench/wide_band.py: {exc}")
    print(f"{args.out}: {frames} frames of {args.rows[1] - args.rows[0]} rows, {kept} labels kept, {dropped} dropped")


if __name__ == "__main__":
    main()
