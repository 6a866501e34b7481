"""Fusing boxes from several detectors or views of one frame: weighted boxes fusion (WBF) and pooled NMS.

WBF (Solovyev, Wang, Gabruseva, "Weighted boxes fusion", 2021; the `ensemble-boxes` package's
`weighted_boxes_fusion`, written out here in frame pixels): the boxes of all models, best score first,
join the first fused box of their class they overlap by IoU > iou_thr, else start a new one; a fused
box is the score-weighted mean of its members' corners. Its score ("avg") is the sum of its members'
weighted scores over the total weight of the models, so a box only some models found scores lower;
with each model giving at most one box per cluster this is ensemble-boxes' "avg" exactly.

Beyond the package: `visible` gives each model the region of the frame it saw (a tile); a fused box
is then scored over only the models whose region holds it (a tile cannot vote against a box it could
not see), and `agnostic=True` clusters boxes of every class together (the class with the largest
summed score wins: two teachers calling one van "car" and "truck" give one box, not two).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastyolo.detections import Detections

CONF_TYPES = ("avg", "max")


def _iou_one(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each of (K, 4) boxes with one box (continuous pixels, area w * h)."""
    iw = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = iw * ih
    union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _empty() -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))


def weighted_boxes_fusion(
    detections: Sequence[Detections],
    weights: Sequence[float] | None = None,
    iou_thr: float = 0.55,
    conf_type: str = "avg",
    visible: Sequence[Sequence[float] | None] | None = None,
    agnostic: bool = False,
    skip_thr: float = 0.0,
) -> Detections:
    """Fuse one Detections per model (same frame, same pixels) into one Detections, best score first.

    weights: one per model (default 1). visible: one (x1, y1, x2, y2) region per model, or None for a model
    that saw the whole frame; without it every model counts for every box. conf_type "avg" (above) or
    "max" (the best member's weighted score over the largest weight). skip_thr: member scores below it
    are left out.
    """
    if conf_type not in CONF_TYPES:
        raise ValueError(f"conf_type must be one of {CONF_TYPES}, got {conf_type!r}")
    m = len(detections)
    w = np.ones(m) if weights is None else np.asarray(weights, np.float64)
    if len(w) != m or (visible is not None and len(visible) != m):
        raise ValueError(f"weighted_boxes_fusion: {m} models, {len(w)} weights, "
                         f"{m if visible is None else len(visible)} regions")
    parts = [(np.asarray(d.boxes, np.float64).reshape(-1, 4), np.asarray(d.scores, np.float64),
              np.asarray(d.class_ids, np.int64), np.full(len(d), i)) for i, d in enumerate(detections)]
    if not parts:
        return _empty()
    boxes, scores, labels, model = (np.concatenate(p) for p in zip(*parts, strict=True))
    keep = (scores >= skip_thr) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, labels, model = boxes[keep], scores[keep] * w[model[keep]], labels[keep], model[keep]
    if not len(boxes):
        return _empty()
    out_boxes, out_scores, out_labels = [], [], []
    groups = [np.arange(len(boxes))] if agnostic else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for group in groups:
        order = group[np.argsort(-scores[group], kind="stable")]
        fused = np.zeros((len(order), 4))
        members: list[list[int]] = []
        for j in order:
            if members:
                iou = _iou_one(fused[:len(members)], boxes[j])
                best = int(iou.argmax())
                if iou[best] > iou_thr:
                    members[best].append(j)
                    s = scores[members[best]]
                    fused[best] = (s[:, None] * boxes[members[best]]).sum(0) / s.sum()
                    continue
            fused[len(members)] = boxes[j]
            members.append([j])
        for k, idx in enumerate(members):
            s = scores[idx]
            if conf_type == "max":
                score = s.max() / w.max()
            else:
                total = _visible_weight(fused[k], w, visible)
                score = s.sum() / max(total, w[model[idx]].sum())
            votes = np.bincount(labels[idx], weights=s)
            out_boxes.append(fused[k])
            out_scores.append(score)
            out_labels.append(int(votes.argmax()))
    order = np.argsort(-np.asarray(out_scores), kind="stable")
    return Detections(np.asarray(out_boxes, np.float32)[order], np.asarray(out_scores, np.float32)[order],
                      np.asarray(out_labels, np.int32)[order])


def _visible_weight(box: np.ndarray, w: np.ndarray, visible) -> float:
    """The total weight of the models whose region holds the box (all models without regions)."""
    if visible is None:
        return float(w.sum())
    total = 0.0
    for weight, region in zip(w, visible, strict=True):
        if region is None or (box[0] >= region[0] - 1 and box[1] >= region[1] - 1 and
                              box[2] <= region[2] + 1 and box[3] <= region[3] + 1):
            total += weight
    return total


def pooled_nms(detections: Sequence[Detections], iou_thr: float = 0.5, agnostic: bool = True) -> Detections:
    """All models' boxes pooled into one NMS (the best box of each overlapping group kept as it is)."""
    import cv2

    if not detections:
        return _empty()
    boxes = np.concatenate([np.asarray(d.boxes, np.float32).reshape(-1, 4) for d in detections])
    scores = np.concatenate([np.asarray(d.scores, np.float32) for d in detections])
    labels = np.concatenate([np.asarray(d.class_ids, np.int32) for d in detections])
    if not len(boxes):
        return _empty()
    rects = np.stack((boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), axis=1)
    if agnostic:
        keep = cv2.dnn.NMSBoxes(rects.astype(np.float64), scores, 0.0, iou_thr)
    else:
        keep = cv2.dnn.NMSBoxesBatched(rects.astype(np.float64), scores, labels, 0.0, iou_thr)
    keep = np.asarray(keep, np.int64).reshape(-1)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    return Detections(boxes[keep], scores[keep], labels[keep])
