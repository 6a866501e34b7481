"""The YOLO v1 loss, vectorised over the batch and the grid.

Per image, summed over the S x S cells (then averaged over the batch), with the network's final
outputs (probabilities after softmax/sigmoid, see train/model.py):

    lambda_coord * sum_resp [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
  +                sum_resp (conf - IoU(pred, truth))^2
  + lambda_noobj * sum_not_resp conf^2
  +                sum_cells_with_objects sum_c (p_c - p^_c)^2

With box_loss="giou" the first term is instead lambda_coord * sum_resp (1 - GIoU(pred, truth)) (Rezatofighi et
al. 2019, the IoU-based regression of YOLOv4 onwards and YOLOX): the squared errors weigh a box's x, y, w and h
apart, so a box can be close in each and still miss IoU 0.5, which the AP counts.

Responsibility: in a cell holding objects (target slots filled in order, see train/targets.py),
object 0 is assigned the predicted box with the highest IoU with it, then object 1 the
highest-IoU box among those still free, and so on (greedy, objects in slot order, ties to the
lower slot index). An assigned ("responsible") predicted box is trained towards its object's
coordinates and towards a confidence equal to its current IoU with it (as in the paper; the IoU is
a constant target, no gradient flows through it). Every other predicted box, in any cell, is pushed
towards confidence 0 with weight lambda_noobj. Class error counts only in cells with objects.

The only Python loop runs over the B target slots (B = 2); batch and cells are tensor axes.
"""

from __future__ import annotations

import torch
from fastyolo.train.config import BOX_LOSSES
from torch import Tensor

from fastyolo.layout import BOX_OFFSET, BOX_VALUES, BOXES, CLASS_OFFSET, CLASSES, CONF_OFFSET, GRID

LAMBDA_COORD = 5.0
LAMBDA_NOOBJ = 0.5
PROB_EPS = 1e-7  # log() of the network's probabilities stays finite
SQRT_EPS = 1e-9  # keeps d sqrt(w)/dw finite when a predicted width reaches 0
AREA_EPS = 1e-12  # GIoU's denominators: an empty box against the zeros of a slot that answers for nothing


def split_output(pred: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(N, S, S, CELL_SIZE) -> classes (N, S, S, C), confidences (N, S, S, B), boxes (N, S, S, B, 4)."""
    classes = pred[..., CLASS_OFFSET : CLASS_OFFSET + CLASSES]
    conf = pred[..., CONF_OFFSET : CONF_OFFSET + BOXES]
    boxes = pred[..., BOX_OFFSET : BOX_OFFSET + BOX_VALUES * BOXES].unflatten(-1, (BOXES, BOX_VALUES))
    return classes, conf, boxes


def _corners(boxes: Tensor) -> Tensor:
    """(..., S, S, B, 4) cell-relative x, y and frame-relative w, h -> frame-relative x1, y1, x2, y2."""
    cells = torch.arange(GRID, dtype=boxes.dtype, device=boxes.device)
    cx = (boxes[..., 0] + cells.view(1, GRID, 1)) / GRID  # columns run along the last grid axis
    cy = (boxes[..., 1] + cells.view(GRID, 1, 1)) / GRID
    half_w, half_h = boxes[..., 2] * 0.5, boxes[..., 3] * 0.5
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


def _intersection_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of corner boxes (..., 4), broadcast against each other."""
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter, area_a + area_b - inter


def pairwise_iou(truth: Tensor, pred: Tensor) -> Tensor:
    """IoU of every target slot with every predicted slot of the same cell: (N,S,S,B,4) x2 -> (N,S,S,B,B)."""
    a = _corners(truth).unsqueeze(-2)  # (N, S, S, Bt, 1, 4)
    b = _corners(pred).unsqueeze(-3)  # (N, S, S, 1, Bp, 4)
    inter, union = _intersection_union(a, b)
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)), torch.zeros_like(union))


def generalized_iou(a: Tensor, b: Tensor) -> Tensor:
    """GIoU of corresponding corner boxes (..., 4) x (..., 4) -> (...): IoU minus the share of the smallest
    enclosing box that neither covers; 1 for equal boxes, towards -1 far apart, defined for empty boxes too."""
    inter, union = _intersection_union(a, b)
    union = union.clamp(min=AREA_EPS)
    hull = ((torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0]))
            * (torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1]))).clamp(min=AREA_EPS)
    return inter / union - (hull - union) / hull


def assign(iou: Tensor, mask: Tensor) -> Tensor:
    """Greedy responsibility: (N,S,S,Bt,Bp) IoU, (N,S,S,Bt) mask -> (N,S,S,Bt,Bp) 0/1 assignment."""
    taken = torch.zeros(iou.shape[:-2] + iou.shape[-1:], dtype=torch.bool, device=iou.device)
    rows = []
    for j in range(iou.shape[-2]):  # target slots, in order
        scores = iou[..., j, :].masked_fill(taken, -1.0)  # IoU >= 0, so a taken slot never wins
        best = scores.argmax(dim=-1)  # first maximum on ties
        chosen = torch.nn.functional.one_hot(best, iou.shape[-1]).bool() & mask[..., j : j + 1]
        taken |= chosen
        rows.append(chosen)
    return torch.stack(rows, dim=-2)


def yolo_loss(
    pred: Tensor,
    target_boxes: Tensor,
    target_mask: Tensor,
    target_classes: Tensor,
    *,
    lambda_coord: float = LAMBDA_COORD,
    lambda_noobj: float = LAMBDA_NOOBJ,
    rescore: bool = True,
    objective: str = "bce",
    box_loss: str = "sse",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss averaged over the batch, and its four parts (detached) for logging.

    pred (N, S, S, CELL_SIZE); target_boxes (N, S, S, B, 4); target_mask (N, S, S, B) bool;
    target_classes (N, S, S, C) (see train/targets.py). box_loss: "sse" (the paper's) or "giou" (module docstring).
    """
    p_classes, p_conf, p_boxes = split_output(pred)
    mask = target_mask.bool()
    with torch.no_grad():
        iou = pairwise_iou(target_boxes, p_boxes.detach())
        resp = assign(iou, mask)  # (N, S, S, Bt, Bp)
        weights = resp.to(pred.dtype)
        responsible = resp.any(dim=-2)  # (N, S, S, Bp)
        # For each predicted slot, the object it answers for (zeros when it answers for none).
        matched = torch.einsum("...tp,...tk->...pk", weights, target_boxes)
        conf_target = (weights * iou).sum(dim=-2) if rescore else weights.sum(dim=-2)
    resp_w = responsible.to(pred.dtype)

    if box_loss == "giou":
        box = lambda_coord * ((1.0 - generalized_iou(_corners(p_boxes), _corners(matched))) * resp_w).sum()
    elif box_loss == "sse":
        xy = ((p_boxes[..., :2] - matched[..., :2]) ** 2).sum(-1)
        wh = ((torch.sqrt(p_boxes[..., 2:] + SQRT_EPS) - torch.sqrt(matched[..., 2:] + SQRT_EPS)) ** 2).sum(-1)
        box = lambda_coord * ((xy + wh) * resp_w).sum()
    else:
        raise ValueError(f"box_loss is one of {BOX_LOSSES}, got {box_loss!r}")
    has_object = mask.any(dim=-1).to(pred.dtype)
    if objective == "sse":  # the paper's squared errors
        obj = (((p_conf - conf_target) ** 2) * resp_w).sum()
        noobj = lambda_noobj * ((p_conf**2) * (1.0 - resp_w)).sum()
        cls = (((p_classes - target_classes) ** 2).sum(-1) * has_object).sum()
    else:
        # Cross-entropy: its gradient at the logit is (p - target), where the squared error's is
        # 2 (p - target) p (1 - p), which vanishes at the confidence prior and kept every box dark.
        p = p_conf.clamp(PROB_EPS, 1.0 - PROB_EPS)
        obj = (-(conf_target * p.log() + (1.0 - conf_target) * (1.0 - p).log()) * resp_w).sum()
        noobj = lambda_noobj * (-(1.0 - p).log() * (1.0 - resp_w)).sum()
        cls = (-(target_classes * p_classes.clamp(min=PROB_EPS).log()).sum(-1) * has_object).sum()

    n = pred.shape[0]
    total = (box + obj + noobj + cls) / n
    parts = {"box": box.detach() / n, "obj": obj.detach() / n, "noobj": noobj.detach() / n, "cls": cls.detach() / n}
    return total, parts
