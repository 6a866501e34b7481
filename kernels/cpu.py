"""numba @njit decode + NMS for the CPU; same semantics as `reference.decode_nms_reference`."""

from __future__ import annotations

import numpy as np
from numba import njit

from fastyolo.layout import (
    BOX_OFFSET,
    BOX_VALUES,
    BOXES,
    CELL_SIZE,
    CLASS_OFFSET,
    CLASSES,
    CONF_OFFSET,
    GRID,
    MAX_BOXES,
)


@njit(cache=True, nogil=True, inline="always")
def _iou(a_x1, a_y1, a_x2, a_y2, b_x1, b_y1, b_x2, b_y2):
    iw = min(a_x2, b_x2) - max(a_x1, b_x1)
    ih = min(a_y2, b_y2) - max(a_y1, b_y1)
    inter = iw * ih if (iw > 0.0 and ih > 0.0) else 0.0
    union = (a_x2 - a_x1) * (a_y2 - a_y1) + (b_x2 - b_x1) * (b_y2 - b_y1) - inter
    return inter / union if union > 0.0 else 0.0


@njit(cache=True, nogil=True)
def decode_nms_one(grid, width, height, conf_threshold, iou_threshold, top_k, out_boxes, out_scores, out_classes):
    """Decode one (S, S, CELL_SIZE) float32 grid into the out_* rows; returns how many were kept."""
    boxes = np.empty((MAX_BOXES, 4), dtype=np.float64)
    scores = np.empty(MAX_BOXES, dtype=np.float32)
    classes = np.empty(MAX_BOXES, dtype=np.int32)
    count = 0
    for row in range(GRID):
        for col in range(GRID):
            best_class = 0
            best_prob = grid[row, col, CLASS_OFFSET]
            for c in range(1, CLASSES):
                p = grid[row, col, CLASS_OFFSET + c]
                if p > best_prob:
                    best_prob = p
                    best_class = c
            for b in range(BOXES):
                score = grid[row, col, CONF_OFFSET + b] * best_prob
                if score < conf_threshold:
                    continue
                base = BOX_OFFSET + BOX_VALUES * b
                cx = (col + np.float64(grid[row, col, base])) / GRID * width
                cy = (row + np.float64(grid[row, col, base + 1])) / GRID * height
                bw = np.float64(grid[row, col, base + 2]) * width
                bh = np.float64(grid[row, col, base + 3]) * height
                boxes[count, 0] = min(max(cx - 0.5 * bw, 0.0), width)
                boxes[count, 1] = min(max(cy - 0.5 * bh, 0.0), height)
                boxes[count, 2] = min(max(cx + 0.5 * bw, 0.0), width)
                boxes[count, 3] = min(max(cy + 0.5 * bh, 0.0), height)
                scores[count] = score
                classes[count] = best_class
                count += 1

    # Candidates were appended in cell order, so a stable sort on -score breaks ties the same
    # way as the reference.
    order = np.argsort(-scores[:count], kind="mergesort")
    kept_index = np.empty(MAX_BOXES, dtype=np.int64)  # IoU uses the float64 boxes, as the reference does
    kept = 0
    for i in range(count):
        if kept >= top_k:
            break
        index = order[i]
        keep = True
        for k in range(kept):
            other = kept_index[k]
            if classes[other] != classes[index]:
                continue
            iou = _iou(
                boxes[other, 0], boxes[other, 1], boxes[other, 2], boxes[other, 3],
                boxes[index, 0], boxes[index, 1], boxes[index, 2], boxes[index, 3],
            )
            if iou > iou_threshold:
                keep = False
                break
        if keep:
            kept_index[kept] = index
            for j in range(4):
                out_boxes[kept, j] = boxes[index, j]
            out_scores[kept] = scores[index]
            out_classes[kept] = classes[index]
            kept += 1
    return kept


@njit(cache=True, nogil=True)
def _decode_nms_batch(grids, sizes, conf_threshold, iou_threshold, top_k, out_boxes, out_scores, out_classes, counts):
    for n in range(grids.shape[0]):
        counts[n] = decode_nms_one(
            grids[n], sizes[n, 0], sizes[n, 1], conf_threshold, iou_threshold, top_k,
            out_boxes[n], out_scores[n], out_classes[n],
        )


def decode_nms_batch(
    grids: np.ndarray,
    sizes: np.ndarray,
    conf_threshold: float,
    iou_threshold: float,
    top_k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode a batch of (N, S, S, CELL_SIZE) grids.

    sizes: (N, 2) frame (width, height) in pixels. Returns padded arrays boxes (N, top_k, 4) f32,
    scores (N, top_k) f32, class_ids (N, top_k) i32 and counts (N,) i32: row n holds counts[n]
    detections, best first.
    """
    grids = np.ascontiguousarray(grids, dtype=np.float32)
    sizes = np.ascontiguousarray(sizes, dtype=np.float64)
    n = grids.shape[0]
    out_boxes = np.zeros((n, top_k, 4), dtype=np.float32)
    out_scores = np.zeros((n, top_k), dtype=np.float32)
    out_classes = np.full((n, top_k), -1, dtype=np.int32)
    counts = np.zeros(n, dtype=np.int32)
    _decode_nms_batch(
        grids, sizes, np.float32(conf_threshold), np.float64(iou_threshold), int(top_k),
        out_boxes, out_scores, out_classes, counts,
    )
    return out_boxes, out_scores, out_classes, counts


def warmup() -> None:
    """Compile (or load from numba's cache) before the first timed frame."""
    decode_nms_batch(np.zeros((1, GRID, GRID, CELL_SIZE), np.float32),
                     np.array([[1.0, 1.0]]), 0.5, 0.5, 1)
