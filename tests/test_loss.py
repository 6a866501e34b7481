"""The vectorised YOLO loss against a slow cell-by-cell pure-Python reference, and its training signal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastyolo.layout import BOX_OFFSET, BOXES, CELL_SIZE, CLASS_OFFSET, CLASSES, CONF_OFFSET, GRID

torch = pytest.importorskip("torch", reason="training needs the [train] extra (torch)")

from fastyolo.train.loss import LAMBDA_COORD, LAMBDA_NOOBJ, PROB_EPS, SQRT_EPS, yolo_loss  # noqa: E402


def iou_ref(a, b, row, col, generalized: bool = False):
    """IoU (or GIoU) of two (x, y, w, h) boxes of cell (row, col), in frame-relative corners."""
    def corners(box):
        cx, cy = (col + box[0]) / GRID, (row + box[1]) / GRID
        return cx - box[2] / 2, cy - box[3] / 2, cx + box[2] / 2, cy + box[3] / 2

    ax1, ay1, ax2, ay2 = corners(a)
    bx1, by1, bx2, by2 = corners(b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    if not generalized:
        return inter / union if union > 0 else 0.0
    hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    return inter / union - (hull - union) / hull


def _bce(p: float, t: float) -> float:
    p = min(max(p, PROB_EPS), 1.0 - PROB_EPS)
    return -(t * math.log(p) + (1.0 - t) * math.log(1.0 - p))


def loss_ref(pred: np.ndarray, tboxes: np.ndarray, tmask: np.ndarray, tclasses: np.ndarray, objective: str = "sse",
             box_loss: str = "sse") -> float:
    """The YOLO v1 loss written out cell by cell, object by object, in float64 Python.

    objective "sse": the paper's squared errors; "bce": cross-entropy for confidences and classes.
    box_loss "sse": squared errors of x, y, sqrt w, sqrt h; "giou": 1 - GIoU.
    """
    total = 0.0
    n = pred.shape[0]
    for i in range(n):
        for row in range(GRID):
            for col in range(GRID):
                cell = [float(v) for v in pred[i, row, col]]
                boxes = [cell[BOX_OFFSET + 4 * b : BOX_OFFSET + 4 * b + 4] for b in range(BOXES)]
                confs = [cell[CONF_OFFSET + b] for b in range(BOXES)]
                free = list(range(BOXES))
                responsible = {}
                for j in range(BOXES):  # objects in slot order, each takes the best free box
                    if not tmask[i, row, col, j]:
                        continue
                    truth = [float(v) for v in tboxes[i, row, col, j]]
                    ious = {b: iou_ref(truth, boxes[b], row, col) for b in free}
                    best = max(free, key=lambda b: (ious[b], -b))  # highest IoU, lower slot on ties
                    free.remove(best)
                    responsible[best] = (truth, ious[best])
                for b in range(BOXES):
                    if b in responsible:
                        truth, iou = responsible[b]
                        x, y, w, h = boxes[b]
                        if box_loss == "giou":
                            total += LAMBDA_COORD * (1.0 - iou_ref(truth, boxes[b], row, col, generalized=True))
                        else:
                            total += LAMBDA_COORD * ((x - truth[0]) ** 2 + (y - truth[1]) ** 2)
                            total += LAMBDA_COORD * (math.sqrt(w + SQRT_EPS) - math.sqrt(truth[2] + SQRT_EPS)) ** 2
                            total += LAMBDA_COORD * (math.sqrt(h + SQRT_EPS) - math.sqrt(truth[3] + SQRT_EPS)) ** 2
                        total += (confs[b] - iou) ** 2 if objective == "sse" else _bce(confs[b], iou)
                    else:
                        total += LAMBDA_NOOBJ * (confs[b] ** 2 if objective == "sse" else _bce(confs[b], 0.0))
                if tmask[i, row, col].any():
                    for c in range(CLASSES):
                        p, t = cell[CLASS_OFFSET + c], float(tclasses[i, row, col, c])
                        total += (p - t) ** 2 if objective == "sse" else -t * math.log(max(p, PROB_EPS))
    return total / n


def random_case(seed: int, n: int = 2):
    """Network-like outputs and targets with cells of 0, 1 and 2 objects, some overlapping the predictions."""
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0.0, 1.0, (n, GRID, GRID, CELL_SIZE)).astype(np.float32)
    logits = rng.normal(size=(n, GRID, GRID, CLASSES))
    pred[..., CLASS_OFFSET : CLASS_OFFSET + CLASSES] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    pred[..., BOX_OFFSET:] = rng.uniform(0.01, 0.6, (n, GRID, GRID, 4 * BOXES))
    tboxes = np.zeros((n, GRID, GRID, BOXES, 4), np.float32)
    tmask = np.zeros((n, GRID, GRID, BOXES), bool)
    tclasses = np.zeros((n, GRID, GRID, CLASSES), np.float32)
    objects = rng.integers(0, BOXES + 1, (n, GRID, GRID))  # 0, 1 or 2 objects per cell
    for i, row, col in zip(*np.nonzero(objects), strict=True):
        k = objects[i, row, col]
        tmask[i, row, col, :k] = True
        tclasses[i, row, col, rng.integers(CLASSES)] = 1.0
        for j in range(k):
            if rng.random() < 0.5:  # near one predicted box, so IoUs are non-trivial
                b = rng.integers(BOXES)
                pb = pred[i, row, col, BOX_OFFSET + 4 * b : BOX_OFFSET + 4 * b + 4]
                tboxes[i, row, col, j] = np.clip(pb + rng.normal(0, 0.05, 4), 0.005, 0.99)
            else:
                tboxes[i, row, col, j] = rng.uniform(0.005, 0.99, 4)
    return pred, tboxes, tmask, tclasses


@pytest.mark.parametrize("box_loss", ["sse", "giou"])
@pytest.mark.parametrize("objective", ["bce", "sse"])
@pytest.mark.parametrize("seed", range(8))
def test_vectorised_loss_equals_cell_by_cell_reference(seed, objective, box_loss):
    pred, tboxes, tmask, tclasses = random_case(seed)
    counts = tmask.sum(-1)
    assert (counts == 0).any() and (counts == 1).any() and (counts == 2).any()
    loss, parts = yolo_loss(*(torch.from_numpy(a).double() if a.dtype != bool else torch.from_numpy(a)
                              for a in (pred, tboxes, tmask, tclasses)), objective=objective, box_loss=box_loss)
    expected = loss_ref(pred, tboxes, tmask, tclasses, objective, box_loss)
    assert float(loss) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert float(sum(parts.values())) == pytest.approx(expected, rel=1e-9)
    # float32, as in training
    loss32, _ = yolo_loss(*(torch.from_numpy(a) for a in (pred, tboxes, tmask, tclasses)), objective=objective,
                          box_loss=box_loss)
    assert float(loss32) == pytest.approx(expected, rel=1e-5)


def test_giou_loss_is_finite_for_empty_boxes_and_pulls_a_disjoint_box_in():
    """GIoU's gradient where the IoU has none: a predicted box apart from its object (IoU 0) is still moved
    towards it, and a box shrunk to zero width gives finite values and gradients, not NaN."""
    pred = np.zeros((1, GRID, GRID, CELL_SIZE), np.float32)
    pred[..., CLASS_OFFSET] = 1.0
    pred[0, 4, 4, BOX_OFFSET : BOX_OFFSET + 4] = [0.9, 0.5, 0.02, 0.05]  # right of the object, IoU 0
    pred[0, 4, 4, BOX_OFFSET + 4 : BOX_OFFSET + 8] = [0.5, 0.5, 0.0, 0.0]  # empty box
    tboxes = np.zeros((1, GRID, GRID, BOXES, 4), np.float32)
    tboxes[0, 4, 4, 0] = [0.2, 0.5, 0.02, 0.05]
    tboxes[0, 4, 4, 1] = [0.5, 0.5, 0.03, 0.03]
    tmask = np.zeros((1, GRID, GRID, BOXES), bool)
    tmask[0, 4, 4] = True
    tclasses = np.zeros((1, GRID, GRID, CLASSES), np.float32)
    tclasses[0, 4, 4, 0] = 1.0
    p = torch.from_numpy(pred).requires_grad_(True)
    loss, parts = yolo_loss(p, *(torch.from_numpy(a) for a in (tboxes, tmask, tclasses)), box_loss="giou")
    loss.backward()
    assert math.isfinite(float(loss.detach())) and torch.isfinite(p.grad).all()
    assert float(parts["box"]) > LAMBDA_COORD * 2  # both boxes miss their objects: 1 - GIoU > 1 each
    assert float(p.grad[0, 4, 4, BOX_OFFSET]) > 0  # descent moves box 0's x left, towards its object


def test_unknown_box_loss_is_refused():
    pred, tboxes, tmask, tclasses = random_case(0)
    with pytest.raises(ValueError, match="box_loss"):
        yolo_loss(*(torch.from_numpy(a) for a in (pred, tboxes, tmask, tclasses)), box_loss="l1")


def test_greedy_assignment_when_both_objects_prefer_the_same_box():
    """Object 0 takes the box it overlaps best; object 1 gets the other box even though it also prefers box 0."""
    pred = np.zeros((1, GRID, GRID, CELL_SIZE), np.float32)
    pred[..., CLASS_OFFSET] = 1.0
    cell = pred[0, 4, 4]
    cell[BOX_OFFSET : BOX_OFFSET + 4] = [0.5, 0.5, 0.2, 0.2]  # box 0
    cell[BOX_OFFSET + 4 : BOX_OFFSET + 8] = [0.9, 0.9, 0.01, 0.01]  # box 1, far away and tiny
    cell[CONF_OFFSET : CONF_OFFSET + 2] = [0.8, 0.3]
    tboxes = np.zeros((1, GRID, GRID, BOXES, 4), np.float32)
    tboxes[0, 4, 4, 0] = [0.5, 0.5, 0.2, 0.2]  # identical to box 0 (IoU 1)
    tboxes[0, 4, 4, 1] = [0.1, 0.1, 0.05, 0.05]  # inside box 0 (IoU 0.0625), apart from box 1 (IoU 0)
    tmask = np.zeros((1, GRID, GRID, BOXES), bool)
    tmask[0, 4, 4] = True
    tclasses = np.zeros((1, GRID, GRID, CLASSES), np.float32)
    tclasses[0, 4, 4, 0] = 1.0
    _, parts = yolo_loss(*(torch.from_numpy(a) for a in (pred, tboxes, tmask, tclasses)), objective="sse")
    # box 0 answers object 0 exactly (no coordinate error, conf target 1); box 1 answers object 1 (IoU 0).
    sq = lambda a, b: (math.sqrt(a + SQRT_EPS) - math.sqrt(b + SQRT_EPS)) ** 2  # noqa: E731
    box1 = (0.9 - 0.1) ** 2 + (0.9 - 0.1) ** 2 + 2 * sq(0.01, 0.05)
    assert float(parts["box"]) == pytest.approx(LAMBDA_COORD * box1, rel=1e-5)
    assert float(parts["obj"]) == pytest.approx((0.8 - 1.0) ** 2 + (0.3 - 0.0) ** 2, rel=1e-5)
    assert float(parts["noobj"]) == 0.0  # every other cell predicts confidence 0
    assert float(parts["cls"]) == 0.0


@pytest.mark.parametrize("box_loss", ["sse", "giou"])
def test_gradients_are_finite_and_descent_lowers_the_loss(box_loss):
    pred, tboxes, tmask, tclasses = random_case(99)
    logits = torch.logit(torch.from_numpy(pred).clamp(1e-4, 1 - 1e-4)).requires_grad_(True)
    targets = [torch.from_numpy(a) for a in (tboxes, tmask, tclasses)]
    opt = torch.optim.Adam([logits], lr=0.05)
    first = None
    for _ in range(100):
        loss, _ = yolo_loss(torch.sigmoid(logits), *targets, box_loss=box_loss)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(logits.grad).all()
        opt.step()
    assert float(loss.detach()) < 0.1 * first
