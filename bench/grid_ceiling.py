"""What a perfect network of this layout could score: the 11x11x2 grid's ceiling on a labelled set.

    python bench/grid_ceiling.py --data ../shared/data/kitti_tiny --min-size 6 --tiles off auto 3x1+full
    python bench/grid_ceiling.py --data ../shared/data/pandaset_002/left_camera --json out.json

Each window of a frame (the whole frame, or the tiles of `--tiles`, fastyolo.tiles.plan) gets the grid a
perfect network would output: the training targets of the labelled boxes in it (train/targets.py, the default
cell order; boxes clipped to the window, kept where at least a quarter of them is inside, as the augmentation
keeps them), confidence 1 and a one-hot class where a box is a target, 0 elsewhere. That grid goes through the
library's own decode + NMS kernel and tile merge (fastyolo.kernels, fastyolo.tiles) and is scored as `fastyolo
eval` scores a model (VOC AP@0.5, `--min-size` boxes ignored). What it loses is the layout's: objects that share
a cell with a bigger one or a third object, boxes NMS suppresses (IoU > cfg.IOU with a neighbour), parts a tile
merge gets wrong. Every oracle box scores 1, so AP is read off one point: recall x precision there, roughly; the
recall and precision are printed too. Needs the [train] extra (fastyolo.train.targets).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from fastyolo.kernels import decode_nms_batch

from fastyolo import cfg
from fastyolo import tiles as tiling
from fastyolo.datasets import load_dataset
from fastyolo.detections import Detections
from fastyolo.errors import FastYoloError
from fastyolo.layout import BOX_OFFSET, BOX_VALUES, BOXES, CELL_SIZE, CLASS_NAMES, CLASS_OFFSET, CLASSES, CONF_OFFSET, GRID
from fastyolo.metrics import average_precision, ignored_boxes, voc_curves


def oracle_grid(boxes: np.ndarray, class_ids: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, int]:
    """The (S, S, CELL_SIZE) grid a perfect network outputs for one window, and the objects the layout dropped."""
    from fastyolo.train.augment import MIN_VISIBLE  # a box less visible than this in a window is not its target
    from fastyolo.train.targets import build_targets

    x0, y0, x1, y1 = (float(v) for v in window)
    clipped = np.clip(boxes, [x0, y0, x0, y0], [x1, y1, x1, y1])
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    inside = np.prod(np.maximum(clipped[:, 2:] - clipped[:, :2], 0), axis=1)
    keep = inside >= MIN_VISIBLE * np.maximum(area, 1e-9)
    t = build_targets(clipped[keep] - [x0, y0, x0, y0], class_ids[keep], x1 - x0, y1 - y0)
    grid = np.zeros((GRID, GRID, CELL_SIZE), np.float32)
    grid[..., CLASS_OFFSET : CLASS_OFFSET + CLASSES] = t.classes
    grid[..., CONF_OFFSET : CONF_OFFSET + BOXES] = t.mask
    grid[..., BOX_OFFSET:] = t.boxes.reshape(GRID, GRID, BOXES * BOX_VALUES)
    return grid, t.dropped


def ceiling(samples: list, spec: cfg.TileSpec, min_size: float) -> dict:
    """Oracle AP@0.5, recall and precision per class on `samples`, windows of `spec`."""
    predictions, truths, ignore, dropped, windows_seen = [], [], [], 0, 0
    for s in samples:
        boxes = np.asarray(s.boxes, np.float64).reshape(-1, 4)
        ids = np.asarray(s.class_ids, np.int64)
        windows = tiling.plan(spec, s.width, s.height)
        grids, sizes = [], []
        for w in windows:
            grid, lost = oracle_grid(boxes, ids, w)
            grids.append(grid)
            sizes.append((w[2] - w[0], w[3] - w[1]))
            dropped += lost
        windows_seen += len(windows)
        out, scores, classes, counts = decode_nms_batch(np.stack(grids), np.array(sizes, np.float64), cfg.MAP_CONF,
                                                        cfg.IOU, cfg.TOP_K)
        found = [Detections(out[i, : counts[i]], scores[i, : counts[i]], classes[i, : counts[i]])
                 for i in range(len(windows))]
        predictions.append(tiling.merge_detections(found, windows, s.width, s.height, cfg.IOU, cfg.TOP_K))
        truths.append((boxes.astype(np.float32), ids))
        ignore.append(ignored_boxes(boxes, s.width, s.height, min_size))
    per_class = {}
    for name, curve in zip(CLASS_NAMES, voc_curves(predictions, truths, ignore), strict=True):
        if curve is None:
            continue
        recall, precision = curve
        per_class[name] = {"ap50": average_precision(recall, precision),
                           "recall": float(recall[-1]) if len(recall) else 0.0,
                           "precision": float(precision[-1]) if len(precision) else 0.0,
                           "boxes": int(sum(int(((t[1] == CLASS_NAMES.index(name)) & ~g).sum())
                                            for t, g in zip(truths, ignore, strict=True)))}
    return {"tiles": str(spec), "frames": len(samples), "windows": windows_seen, "dropped_targets": dropped,
            "per_class": per_class}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a labelled folder (crowdAI labels.csv or KITTI)")
    parser.add_argument("--min-size", type=float, default=0.0, help="boxes smaller than this are ignored, as eval's")
    parser.add_argument("--tiles", nargs="+", default=["off", "auto"], help="tilings to score (as --tiles)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    try:
        samples, _ = load_dataset(args.data)
        specs = [cfg.parse_tiles(t) for t in args.tiles]
    except FastYoloError as e:  # a missing or unreadable folder, a bad --tiles: one line, as the CLI's errors
        sys.exit(f"bench/grid_ceiling.py: {e}")
    results = []
    for spec in specs:
        r = ceiling(samples, spec, args.min_size)
        results.append(r)
        figures = ", ".join(f"{c} AP50 {v['ap50']:.3f} (R {v['recall']:.2f} P {v['precision']:.2f}, {v['boxes']} boxes)"
                            for c, v in r["per_class"].items())
        print(f"{args.data} tiles {r['tiles']}: {figures}; {r['dropped_targets']} targets dropped in "
              f"{r['windows']} windows", flush=True)
    if args.json:
        try:
            args.json.write_text(json.dumps({"data": str(args.data), "min_size": args.min_size, "results": results},
                                            indent=1) + "\n")
        except OSError as e:
            sys.exit(f"bench/grid_ceiling.py: cannot write {args.json}: {e.strerror}")


if __name__ == "__main__":
    main()
