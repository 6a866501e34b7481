"""Where the rare classes go: training targets per class, and what a model predicts in labelled cells.

    python bench/class_cells.py FOLDER...                       # target objects per class, --cell-order area / rare
    python bench/class_cells.py FOLDER... --model runs/train/a6/last.pt   # + the model's class probabilities

For each labelled folder (crowdAI labels.csv or KITTI label_2/): how many objects of each class become training
targets under each cell order (train/targets.py) and how many are dropped; with --model, for the grid cells whose
target is each class (the "area" rule, un-augmented frames), the mean predicted class distribution and the share
of those cells whose most likely class is the right one. Needs the [train] extra (torch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def target_counts(samples: list) -> dict[str, tuple[np.ndarray, int]]:
    """{order: (objects kept per class, objects dropped)} over `samples`."""
    from fastyolo.train.config import CELL_ORDERS
    from fastyolo.train.targets import build_targets

    from fastyolo.layout import CLASSES

    counts = {}
    for order in CELL_ORDERS:
        kept, dropped = np.zeros(CLASSES, np.int64), 0
        for s in samples:
            t = build_targets(s.boxes, s.class_ids, s.width, s.height, order)
            kept += (t.classes * t.mask.sum(-1, keepdims=True)).sum((0, 1)).astype(np.int64)
            dropped += t.dropped
        counts[order] = (kept, dropped)
    return counts


def cell_predictions(model_path: Path, samples: list) -> dict[str, tuple[int, np.ndarray, float]]:
    """{class: (target cells, mean predicted class distribution there, share whose argmax is the class)}."""
    import torch
    from fastyolo.train.checkpoint import load_model
    from fastyolo.train.data import YoloDataset
    from fastyolo.train.engine import _loader, predict

    from fastyolo.layout import CLASS_NAMES

    model = load_model(model_path).eval()
    dataset = YoloDataset(samples)
    grids, _ = predict(model, _loader(dataset, 16, 0, torch.device("cpu")), torch.device("cpu"))
    targets = np.stack([dataset[i][3].numpy() for i in range(len(dataset))])  # (N, S, S, C) one-hot
    probs = grids[..., : len(CLASS_NAMES)]
    out = {}
    for c, name in enumerate(CLASS_NAMES):
        cells = targets[..., c] == 1
        if cells.any():
            out[name] = (int(cells.sum()), probs[cells].mean(0), float((probs[cells].argmax(-1) == c).mean()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--model", type=Path, help="a fastyolo checkpoint (.pt): its class probabilities in labelled cells")
    args = p.parse_args(argv)
    from fastyolo.datasets import load_dataset
    from fastyolo.layout import CLASS_NAMES

    for folder in args.folders:
        samples, _ = load_dataset(folder)
        for order, (kept, dropped) in target_counts(samples).items():
            per_class = ", ".join(f"{n} {k}" for n, k in zip(CLASS_NAMES, kept.tolist(), strict=True))
            print(f"{folder}: cell order {order}: targets {per_class}; dropped {dropped}")
        if args.model:
            for name, (cells, mean, right) in cell_predictions(args.model, samples).items():
                dist = ", ".join(f"{n} {v:.3f}" for n, v in zip(CLASS_NAMES, mean.tolist(), strict=True))
                print(f"  {args.model}: {cells} {name} cells: mean p {dist}; argmax {name} in {right:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
