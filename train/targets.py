"""Training targets: labelled boxes -> per-cell tensors in the network's own parametrisation.

Assignment rule (YOLO v1, extended to B objects per cell):

* An object belongs to the grid cell that holds its box centre (a centre exactly on the right or
  bottom frame edge goes to the last cell).
* Objects are placed in the order they are given: the first object of a cell goes to target slot
  0, the second to slot 1, ... up to BOXES objects per cell. A further object falling in a full cell
  is dropped and counted in `Targets.dropped` (the trainer reports the total).
* Target slot j is only storage: which *predicted* box is responsible for the object is decided
  in the loss (train/loss.py) by IoU with the cell's predicted boxes.
* The class target of a cell is the mean of the one-hot vectors of its objects (one object: its
  one-hot; a Car and a Truck: 0.5/0.5), the minimiser of the summed squared class error.

Tensors (S = GRID, B = BOXES, C = CLASSES, all from fastyolo.layout):

* boxes   (S, S, B, 4) float32: x, y of the centre relative to the cell (0..1), w, h relative to the
  whole frame, exactly as the network outputs them.
* mask    (S, S, B) bool: target slot j of the cell holds an object.
* classes (S, S, C) float32: class target (all zero in empty cells).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fastyolo.layout import BOX_VALUES, BOXES, CLASSES, GRID


class Targets(NamedTuple):
    boxes: np.ndarray  # (S, S, B, 4) float32
    mask: np.ndarray  # (S, S, B) bool
    classes: np.ndarray  # (S, S, C) float32
    dropped: int  # objects lost because their cell already held B objects


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
    counts = np.zeros((GRID, GRID, CLASSES), np.float32)  # objects per class per cell
    dropped = 0
    # Centre and size relative to the frame; the squash to INPUT_SIZE keeps these unchanged.
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5 / width
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5 / height
    w = (boxes[:, 2] - boxes[:, 0]) / width
    h = (boxes[:, 3] - boxes[:, 1]) / height
    # K is a handful of boxes per image: a plain loop keeps the order rule obvious.
    for k in range(boxes.shape[0]):
        col = min(max(int(np.floor(cx[k] * GRID)), 0), GRID - 1)
        row = min(max(int(np.floor(cy[k] * GRID)), 0), GRID - 1)
        used = int(mask[row, col].sum())
        if used == BOXES:
            dropped += 1
            continue
        out_boxes[row, col, used] = (cx[k] * GRID - col, cy[k] * GRID - row, w[k], h[k])
        mask[row, col, used] = True
        counts[row, col, class_ids[k]] += 1.0
    objects = mask.sum(axis=-1, keepdims=True).astype(np.float32)
    classes = np.divide(counts, objects, out=np.zeros_like(counts), where=objects > 0)
    return Targets(out_boxes, mask, classes, dropped)
