"""Training targets: labelled boxes -> per-cell tensors in the network's own parametrisation.

Assignment rule (YOLO v1, extended to B objects per cell):

* An object belongs to the grid cell that holds its box centre (a centre exactly on the right or
  bottom frame edge goes to the last cell).
* Objects are placed largest first (by box area; equal areas keep the given order): the first
  object of a cell goes to target slot 0, the second to slot 1, ... up to BOXES objects per cell.
  A further object falling in a full cell is dropped and counted in `Targets.dropped` (the
  trainer reports the total); largest first means the dropped ones are the smallest.
* Target slot j is only storage: which *predicted* box is responsible for the object is decided
  in the loss (train/loss.py) by IoU with the cell's predicted boxes.
* The network has one class distribution per cell, so a cell's class is the class of its first
  (largest) object and its class target is that one-hot. A later object of another class cannot
  be represented (its box would decode with the wrong class, a sure false positive), so it is
  dropped and counted like an object in a full cell.

Tensors (S = GRID, B = BOXES, C = CLASSES, all from fastyolo.layout):

* boxes   (S, S, B, 4) float32: x, y of the centre relative to the cell (0..1), w, h relative to the
  whole frame, exactly as the network outputs them.
* mask    (S, S, B) bool: target slot j of the cell holds an object.
* classes (S, S, C) float32: one-hot class target (all zero in empty cells).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fastyolo.layout import BOX_VALUES, BOXES, CLASSES, GRID


class Targets(NamedTuple):
    boxes: np.ndarray  # (S, S, B, 4) float32
    mask: np.ndarray  # (S, S, B) bool
    classes: np.ndarray  # (S, S, C) float32
    dropped: int  # objects left out: their cell was full or is of another class


def build_targets(boxes: np.ndarray, class_ids: np.ndarray, width: float, height: float) -> Targets:
    """Targets for one image; `boxes` (K, 4) x1, y1, x2, y2 in the frame's pixels, `class_ids` (K,)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    if boxes.shape[0] != class_ids.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {class_ids.shape[0]} class ids")
    if class_ids.size and (class_ids.min() < 0 or class_ids.max() >= CLASSES):
        raise ValueError(f"class ids must be in [0, {CLASSES}), got {class_ids.min()}..{class_ids.max()}")
    out_boxes = np.zeros((GRID, GRID, BOXES, BOX_VALUES), np.float32)
    mask = np.zeros((GRID, GRID, BOXES), bool)
    classes = np.zeros((GRID, GRID, CLASSES), np.float32)
    dropped = 0
    # Centre and size relative to the frame; the squash to INPUT_SIZE keeps these unchanged.
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5 / width
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5 / height
    w = (boxes[:, 2] - boxes[:, 0]) / width
    h = (boxes[:, 3] - boxes[:, 1]) / height
    order = np.argsort(-(w * h), kind="stable")
    # K is a handful of boxes per image: a plain loop keeps the order rule obvious.
    for k in order:
        col = min(max(int(np.floor(cx[k] * GRID)), 0), GRID - 1)
        row = min(max(int(np.floor(cy[k] * GRID)), 0), GRID - 1)
        used = int(mask[row, col].sum())
        if used == BOXES or (used and classes[row, col, class_ids[k]] == 0.0):
            dropped += 1
            continue
        out_boxes[row, col, used] = (cx[k] * GRID - col, cy[k] * GRID - row, w[k], h[k])
        mask[row, col, used] = True
        if used == 0:
            classes[row, col, class_ids[k]] = 1.0
    return Targets(out_boxes, mask, classes, dropped)
