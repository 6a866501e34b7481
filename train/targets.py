"""Training targets: labelled boxes -> per-cell tensors in the network's own parametrisation.

Assignment rule (YOLO v1, extended to B objects per cell):

* An object belongs to the grid cell that holds its box centre (a centre exactly on the right or
  bottom frame edge goes to the last cell).
* Objects are placed in `order` (TrainConfig.cell_order): "area", largest first (by box area;
  equal areas keep the given order); "rare", the rarest class first (RARE_FIRST), largest first
  within a class. The first object of a cell goes to target slot 0, the second to slot 1, ... up
  to BOXES objects per cell. A further object falling in a full cell is dropped and counted in
  `Targets.dropped` (the trainer reports the total); largest first means the dropped ones are the
  smallest.
* Target slot j is only storage: which *predicted* box is responsible for the object is decided
  in the loss (train/loss.py) by IoU with the cell's predicted boxes.
* The network has one class distribution per cell, so a cell's class is the class of its first
  object and its class target is that one-hot. A later object of another class cannot be
  represented (its box would decode with the wrong class, a sure false positive), so it is
  dropped and counted like an object in a full cell. Under "area" that loses the small classes
  beside bigger cars: on PandaSet's right camera every one of its 46 pedestrians shares its cell
  with a bigger car and none is ever a target (bench/RESULTS.md, "Where the rare classes went").

Tensors (S = GRID, B = BOXES, C = CLASSES, all from fastyolo.layout):

* boxes   (S, S, B, 4) float32: x, y of the centre relative to the cell (0..1), w, h relative to the
  whole frame, exactly as the network outputs them.
* mask    (S, S, B) bool: target slot j of the cell holds an object.
* classes (S, S, C) float32: one-hot class target (all zero in empty cells).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from fastyolo.train.config import CELL_ORDER, CELL_ORDERS

from fastyolo.layout import BOX_VALUES, BOXES, CLASS_NAMES, CLASSES, GRID

# Placement order of the classes under cell_order "rare": the rarest in driving footage first.
RARE_FIRST = ("Pedestrian", "Truck", "Car")
_RANK = np.array([RARE_FIRST.index(name) for name in CLASS_NAMES], np.int64)  # class id -> place in RARE_FIRST


class Targets(NamedTuple):
    boxes: np.ndarray  # (S, S, B, 4) float32
    mask: np.ndarray  # (S, S, B) bool
    classes: np.ndarray  # (S, S, C) float32
    dropped: int  # objects left out: their cell was full or is of another class


def build_targets(boxes: np.ndarray, class_ids: np.ndarray, width: float, height: float,
                  order: str = CELL_ORDER) -> Targets:
    """Targets for one image; `boxes` (K, 4) x1, y1, x2, y2 in the frame's pixels, `class_ids` (K,);
    `order` which object a cell keeps first: "area" or "rare" (the module's docstring)."""
    if order not in CELL_ORDERS:
        raise ValueError(f"order is one of {CELL_ORDERS}, got {order!r}")
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
    # Both sorts are stable; lexsort sorts by its last key first.
    area = w * h
    placing = np.argsort(-area, kind="stable") if order == "area" else np.lexsort((-area, _RANK[class_ids]))
    # K is a handful of boxes per image: a plain loop keeps the order rule obvious.
    for k in placing:
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
