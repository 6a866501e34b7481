"""Plain-numpy decode + NMS: the specification the numba kernels are tested against.

Semantics, shared by every implementation:

1. Per cell, the class is the arg-max of the class probabilities (first on ties) and each of
   the B boxes scores ``confidence_b * max_probability`` (float32 multiply).
2. A box is a candidate when ``score >= conf_threshold`` (both float32).
3. Boxes go to frame pixels in float64: ``cx = (col + x) / S * width``, ``w * width``, corners
   ``cx -/+ 0.5 * w`` clipped to [0, width] (likewise y with rows and height).
4. Candidates are ordered by descending score; ties keep the order cell by cell (row-major),
   box slot within the cell.
5. Greedy NMS per class: a candidate is kept unless a kept box of the same class has
   IoU > iou_threshold with it (IoU of two zero-area boxes is 0); at most top_k are kept.

Grids are finite (sigmoid and softmax outputs); the CPU pipeline rejects a NaN or infinite output
as a broken model before decoding, since the implementations' comparisons would differ on NaN.
"""

from __future__ import annotations

import numpy as np

from fastyolo.layout import BOX_OFFSET, BOX_VALUES, BOXES, CLASS_OFFSET, CLASSES, CONF_OFFSET, GRID


def _decode(grid: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = grid[:, :, CLASS_OFFSET : CLASS_OFFSET + CLASSES]
    class_ids = probs.argmax(axis=-1).astype(np.int32)
    best = probs.max(axis=-1)
    scores = grid[:, :, CONF_OFFSET : CONF_OFFSET + BOXES] * best[:, :, None]  # float32

    coords = grid[:, :, BOX_OFFSET : BOX_OFFSET + BOX_VALUES * BOXES].reshape(GRID, GRID, BOXES, BOX_VALUES)
    coords = coords.astype(np.float64)
    rows, cols = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    cx = (cols[:, :, None] + coords[..., 0]) / GRID * width
    cy = (rows[:, :, None] + coords[..., 1]) / GRID * height
    bw = coords[..., 2] * width
    bh = coords[..., 3] * height
    boxes = np.stack(
        [
            np.minimum(np.maximum(cx - 0.5 * bw, 0.0), width),
            np.minimum(np.maximum(cy - 0.5 * bh, 0.0), height),
            np.minimum(np.maximum(cx + 0.5 * bw, 0.0), width),
            np.minimum(np.maximum(cy + 0.5 * bh, 0.0), height),
        ],
        axis=-1,
    )
    cell_classes = np.broadcast_to(class_ids[:, :, None], (GRID, GRID, BOXES))
    return boxes.reshape(-1, 4), scores.reshape(-1), cell_classes.reshape(-1)


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    safe = np.where(union > 0, union, 1.0)
    return np.where(union > 0, inter / safe, 0.0)


def decode_nms_reference(
    grid: np.ndarray,
    width: float,
    height: float,
    conf_threshold: float,
    iou_threshold: float,
    top_k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's (S, S, CELL_SIZE) output; returns (boxes (K,4) f32, scores (K,) f32, class_ids (K,) i32)."""
    boxes, scores, classes = _decode(grid, float(width), float(height))
    candidates = np.flatnonzero(scores >= np.float32(conf_threshold))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    suppressed = np.zeros(order.size, dtype=bool)
    keep: list[int] = []
    for rank, index in enumerate(order):
        if len(keep) >= top_k:
            break
        if suppressed[rank]:
            continue
        keep.append(index)
        rest = order[rank + 1 :]
        same_class = classes[rest] == classes[index]
        overlap = _iou_one_to_many(boxes[index], boxes[rest]) > iou_threshold
        suppressed[rank + 1 :] |= same_class & overlap
    kept = np.asarray(keep, dtype=np.int64)
    return boxes[kept].astype(np.float32), scores[kept].astype(np.float32), classes[kept].astype(np.int32)
