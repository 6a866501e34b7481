"""Tiled inference on labelled frames: Car AP50 per tiling and per merge rule, from one network pass per tiling.

    python bench/tiles_ablation.py --data ../shared/data/kitti_tiny --min-size 6
    python bench/tiles_ablation.py --data ../shared/data/pandaset_002/back_camera --tiles off,auto,2x1+full

For each --tiles value every window of every frame runs once through an untiled Detector (the same
preprocess -> infer -> decode + NMS the tiled Detector batches); the windows' boxes are then merged with
fastyolo.tiles.merge_detections under each merge rule: "merge" (the default: cut boxes merge, whole boxes
NMS), "nms" (nothing counts as cut: plain class-aware NMS across windows) and "drop" (every box that
touches an inner tile edge is removed, then NMS). The "merge" column is what
`fastyolo eval --tiles T` reports (a test checks that they agree). AP figures do not depend on the load of
the machine; this script prints no timing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fastyolo import cfg, tiles
from fastyolo.commands.eval import _prefetch
from fastyolo.datasets import load_dataset
from fastyolo.detections import Detections
from fastyolo.detector import Detector
from fastyolo.metrics import evaluate

RULES = ("merge", "nms", "drop")


def window_detections(detector: Detector, frames: list[np.ndarray], spec: cfg.TileSpec, batch: int = 8
                      ) -> list[tuple[list[Detections], np.ndarray]]:
    """Per frame: (each window's Detections in its own pixels, the windows)."""
    out = []
    for frame in frames:
        crops, windows = tiles.crops(frame, spec, detector.tile_overlap)
        found = []
        for i in range(0, len(crops), batch):
            found += detector.detect_batch(crops[i : i + batch])
        out.append((found, windows))
    return out


def merged(per_frame, frames: list[np.ndarray], rule: str, iou: float, top_k: int) -> list[Detections]:
    result = []
    for (found, windows), frame in zip(per_frame, frames, strict=True):
        h, w = frame.shape[:2]
        if rule == "drop" and len(windows) > 1:  # remove cut boxes, then merge what is left (no box is cut any more)
            found = [d[tiles.cut_flags(d.boxes.astype(np.float64) + win[[0, 1, 0, 1]], win, w, h) == 0]
                     for d, win in zip(found, windows, strict=True)]
        margin = tiles.CUT_MARGIN
        if rule == "nms":
            tiles.CUT_MARGIN = -1.0  # no box touches an inner edge: plain NMS
        try:
            result.append(tiles.merge_detections(found, windows, w, h, iou, top_k))
        finally:
            tiles.CUT_MARGIN = margin
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, help="[the packaged model]")
    p.add_argument("--tiles", default="off,auto,2x1,2x1+full,3x1,3x1+full,4x1,4x1+full")
    p.add_argument("--min-size", type=float, default=0.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    samples, report = load_dataset(args.data)
    print(report, file=sys.stderr)
    frames = list(_prefetch(samples, 16))
    detector = Detector(args.model, conf=cfg.MAP_CONF, top_k=cfg.TOP_K)
    rows = []
    print(f"{'tiles':<12}{'windows':>8}" + "".join(f"{'Car AP50 ' + r:>16}" for r in RULES) + f"{'mAP50 merge':>13}")
    for text in args.tiles.split(","):
        spec = cfg.parse_tiles(text)
        per_frame = window_detections(detector, frames, spec)
        row = {"tiles": str(spec), "windows": sum(len(w) for _, w in per_frame) / len(frames)}
        for rule in RULES if not spec.off else ("merge",):
            result = evaluate(merged(per_frame, frames, rule, detector.iou, detector.top_k), samples,
                              min_size=args.min_size)
            row[rule] = {"car_ap50": result["per_class"]["Car"]["ap50"], "map50": result["map50"]}
        rows.append(row)
        cells = "".join(f"{row[r]['car_ap50']:>16.3f}" if r in row else f"{'':>16}" for r in RULES)
        print(f"{row['tiles']:<12}{row['windows']:>8.1f}{cells}{row['merge']['map50']:>13.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data), "min_size": args.min_size, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
