"""The first real model: teacher-labelled highway footage, split into whole contiguous segments.

    fastyolo label ../shared/data/video/highway_clip.mp4 --teacher ../shared/data/teacher/yolox_nano.onnx \\
        -o runs/labelled/highway
    python bench/real_model.py split runs/labelled/highway --out runs/data
    # -> runs/data/hw_train (segments 1-3 of the clip), runs/data/hw_heldout (segments 4-5, never trained on)

The clip (../shared/data/video/README.md) is five segments of Udacity's project video joined end to
end: frames [0, 183), [183, 259), [259, 297), [297, 388), [388, 485). Segments 4 and 5 are two cuts
of the same stretch of road (the black and white cars), so they are held out together: a model
that trained on one of them would have seen the other's cars. Udacity's test_images are stills
of that stretch too, so they are not trained on either.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from pathlib import Path

SEGMENTS = ((0, 183), (183, 259), (259, 297), (297, 388), (388, 485))
TRAIN_SEGMENTS = (0, 1, 2)
HELDOUT_SEGMENTS = (3, 4)


def segment_of(frame: int) -> int:
    return next(k for k, (a, b) in enumerate(SEGMENTS) if a <= frame < b)


def split(labelled: Path, out: Path) -> dict[str, dict[str, int]]:
    """Write out/hw_train and out/hw_heldout (labels.csv + images/) from a `fastyolo label` dataset of the clip."""
    frames = {f["file"]: f["frame"] for f in json.loads((labelled / "sources.json").read_text())["frames"]}
    with open(labelled / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    summary = {}
    for name, segments in (("hw_train", TRAIN_SEGMENTS), ("hw_heldout", HELDOUT_SEGMENTS)):
        keep = [r for r in body if segment_of(frames[r[4]]) in segments]
        folder = out / name
        (folder / "images").mkdir(parents=True, exist_ok=False)
        with open(folder / "labels.csv", "w", newline="") as f:
            csv.writer(f).writerows([header, *keep])
        files = sorted({r[4] for r in keep})
        for file in files:
            src, dst = labelled / "images" / file, folder / "images" / file
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        summary[name] = {"frames": len(files), "boxes": len(keep),
                         **{c: sum(r[5] == c for r in keep) for c in ("Car", "Truck", "Pedestrian")}}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="split a labelled highway_clip dataset into training and held-out segments")
    s.add_argument("labelled", type=Path)
    s.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(json.dumps(split(args.labelled, args.out), indent=1))


if __name__ == "__main__":
    main()
