"""Detection accuracy: VOC mAP@0.5 and COCO mAP@[.5:.95] of Detections against labelled boxes.

- map50: PASCAL VOC (2010+) average precision at IoU 0.5 with all-point interpolation, per class, in
  numpy (`voc_ap50`). Boxes are continuous pixel coordinates (area = w * h, no VOC "+1").
- map50_95: COCO AP averaged over IoU 0.50:0.05:0.95 (101-point interpolation, up to 100 detections
  per frame and class), computed by faster-coco-eval (the C++ port of pycocotools; same numbers).
- Ignored boxes (the VOC "difficult" rule): a box narrower or shorter than `min_size` pixels AT THE
  NETWORK INPUT (its width scaled by INPUT_SIZE / frame width, height by INPUT_SIZE / frame height)
  is neither to be found nor a false positive when found. VOC: a detection whose best-overlapping
  box (IoU >= 0.5) is ignored does not count. COCO: the box is an `iscrowd` region, so detections
  lying on it are dropped from the count, as pycocotools does for crowds.
- A class without evaluated ground-truth boxes has AP None and is left out of the means (as COCO
  does); a mean over no class at all is None.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastyolo.datasets import Sample
from fastyolo.detections import Detections
from fastyolo.errors import MissingDependencyError
from fastyolo.layout import CLASS_NAMES, CLASSES, INPUT_SIZE

VOC_IOU = 0.5

Truth = tuple[np.ndarray, np.ndarray]  # (K, 4) x1, y1, x2, y2 boxes and (K,) class ids


def ignored_boxes(boxes: np.ndarray, width: float, height: float, min_size: float) -> np.ndarray:
    """True for boxes under `min_size` pixels on a side once the frame is squashed to the network input."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if min_size <= 0:
        return np.zeros(len(boxes), bool)
    w = (boxes[:, 2] - boxes[:, 0]) * (INPUT_SIZE / width)
    h = (boxes[:, 3] - boxes[:, 1]) * (INPUT_SIZE / height)
    return (w < min_size) | (h < min_size)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of x1, y1, x2, y2 boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 1, 4)
    b = np.asarray(b, np.float64).reshape(1, -1, 4)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2010+): area under the precision envelope of the PR curve."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def voc_ap50(
    predictions: Sequence[Detections], truths: Sequence[Truth], ignore: Sequence[np.ndarray], iou: float = VOC_IOU
) -> list[float | None]:
    """Per-class VOC AP (all-point) at IoU `iou`; None for a class with no evaluated box."""
    return [None if c is None else average_precision(*c) for c in voc_curves(predictions, truths, ignore, iou)]


def voc_curves(
    predictions: Sequence[Detections], truths: Sequence[Truth], ignore: Sequence[np.ndarray], iou: float = VOC_IOU
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per-class (recall, precision) over the detections ranked by score; None for a class with no evaluated box.

    As in the VOC devkit: each detection, best score first, goes to the same-class box it overlaps
    most; it is a true positive if that IoU >= `iou` and the box was not taken by a higher-scoring
    detection, ignored if that box is ignored, a false positive otherwise.
    """
    cls_, score, key, tp_candidate, skip = [], [], [], [], []
    offset = 0
    for dets, (boxes, class_ids), ign in zip(predictions, truths, ignore, strict=True):
        n = len(dets)
        if n:
            overlaps = box_iou(dets.boxes, boxes)
            overlaps[np.asarray(dets.class_ids)[:, None] != np.asarray(class_ids)[None, :]] = -1.0
            best = overlaps.argmax(axis=1) if len(boxes) else np.zeros(n, np.int64)
            hit = overlaps.max(axis=1) >= iou if len(boxes) else np.zeros(n, bool)
            cls_.append(np.asarray(dets.class_ids, np.int64))
            score.append(np.asarray(dets.scores, np.float64))
            key.append(offset + best)  # identifies the matched box across the whole set
            skip.append(hit & np.asarray(ign, bool)[best] if len(boxes) else np.zeros(n, bool))
            tp_candidate.append(hit & ~skip[-1])
        offset += len(boxes)
    npos = np.zeros(CLASSES, np.int64)
    for (_, class_ids), ign in zip(truths, ignore, strict=True):
        npos += np.bincount(np.asarray(class_ids, np.int64)[~np.asarray(ign, bool)], minlength=CLASSES)[:CLASSES]
    if cls_:
        cls_a, score_a, key_a = np.concatenate(cls_), np.concatenate(score), np.concatenate(key)
        cand_a, skip_a = np.concatenate(tp_candidate), np.concatenate(skip)
    else:
        cls_a = key_a = np.zeros(0, np.int64)
        score_a = np.zeros(0)
        cand_a = skip_a = np.zeros(0, bool)
    curves: list[tuple[np.ndarray, np.ndarray] | None] = []
    for c in range(CLASSES):
        if npos[c] == 0:
            curves.append(None)
            continue
        sel = np.nonzero((cls_a == c) & ~skip_a)[0]
        sel = sel[np.argsort(-score_a[sel], kind="stable")]
        cand = cand_a[sel]
        tp = np.zeros(len(sel), bool)
        # The first (best-scoring) candidate on each box is the true positive; later ones are duplicates.
        _, first = np.unique(key_a[sel][cand], return_index=True)
        tp[np.nonzero(cand)[0][first]] = True
        ctp = np.cumsum(tp)
        cfp = np.cumsum(~tp)
        curves.append((ctp / npos[c], ctp / np.maximum(ctp + cfp, 1)))
    return curves


def coco_inputs(
    predictions: Sequence[Detections], truths: Sequence[Truth], ignore: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ground truth as a COCO dataset dict (ignored boxes as iscrowd=1) and the detections as COCO results."""
    images, annotations, results = [], [], []
    for i, (dets, (boxes, class_ids), ign) in enumerate(zip(predictions, truths, ignore, strict=True), start=1):
        image = {"id": i}
        if sizes is not None:
            image.update(width=int(sizes[i - 1][0]), height=int(sizes[i - 1][1]))
        images.append(image)
        for box, c, crowd in zip(np.asarray(boxes, np.float64).reshape(-1, 4), class_ids, ign, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c) + 1,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": int(crowd)})
        det_boxes = np.asarray(dets.boxes, np.float64).reshape(-1, 4)
        for box, score, c in zip(det_boxes, dets.scores, dets.class_ids, strict=True):
            results.append({"image_id": i, "category_id": int(c) + 1, "score": float(score),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    categories = [{"id": c + 1, "name": name} for c, name in enumerate(CLASS_NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def coco_precision_summary(precision: np.ndarray) -> tuple[float | None, list[float | None]]:
    """mAP@[.5:.95] and per-class AP from a COCOeval `eval["precision"]` array [T, R, K, A, M] (area all, 100 dets)."""
    p = np.asarray(precision)[:, :, :, 0, -1]
    per_class = [float(p[:, :, k][p[:, :, k] > -1].mean()) if (p[:, :, k] > -1).any() else None for k in range(p.shape[2])]
    overall = float(p[p > -1].mean()) if (p > -1).any() else None
    return overall, per_class


def require_coco_eval() -> None:
    """Stop with one line, before any work, where faster-coco-eval (a dependency, which the mAP needs) is missing."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        raise MissingDependencyError("the mAP needs faster-coco-eval, a fastyolo dependency: "
                                     "pip install 'faster-coco-eval>=1.6'") from None


def coco_ap(
    predictions: Sequence[Detections], truths: Sequence[Truth], ignore: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]] | None = None,
) -> tuple[float | None, list[float | None]]:
    """COCO mAP@[.5:.95] and per-class AP with faster-coco-eval."""
    require_coco_eval()
    from faster_coco_eval import COCO, COCOeval_faster

    gt, results = coco_inputs(predictions, truths, ignore, sizes)
    has_truth = [any(a["category_id"] == c + 1 and not a["iscrowd"] for a in gt["annotations"]) for c in range(CLASSES)]
    if not results:  # nothing detected: AP 0 where there was something to find
        per_class = [0.0 if t else None for t in has_truth]
        return (0.0 if any(has_truth) else None), per_class
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt)
        coco_dt = coco_gt.loadRes(results)
        engine = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
        engine.evaluate()
        engine.accumulate()
    return coco_precision_summary(engine.eval["precision"])


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def evaluate(
    predictions: Sequence[Detections],
    truths: Sequence[Truth] | Sequence[Sample],
    *,
    min_size: float = 0.0,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    curves: bool = False,
) -> dict[str, Any]:
    """VOC mAP@0.5 and COCO mAP@[.5:.95] of per-frame detections against per-frame ground truth.

    truths: Samples (their width/height give the frame sizes) or (boxes, class_ids) pairs, then
    `image_sizes` [(width, height), ...] is needed when min_size > 0. Returns
    {"map50", "map50_95", "per_class": {name: {"ap50", "ap50_95", "boxes", "ignored", "detections"}},
    "boxes_evaluated", "boxes_ignored", "detections", "frames", "min_size"}; with curves=True also
    "curves": {name: (recall, precision) arrays at IoU 0.5, or None} (for plot_pr_curves; not JSON).
    """
    if len(predictions) != len(truths):
        raise ValueError(f"evaluate: {len(predictions)} predictions for {len(truths)} frames; give one Detections per frame")
    pairs: list[Truth] = []
    sizes: list[tuple[int, int]] | None = None
    if truths and isinstance(truths[0], Sample):
        pairs = [(s.boxes, s.class_ids) for s in truths]  # type: ignore[union-attr]
        sizes = [(s.width, s.height) for s in truths]  # type: ignore[union-attr]
    else:
        pairs = [(np.asarray(b, np.float64).reshape(-1, 4), np.asarray(c, np.int64)) for b, c in truths]  # type: ignore[misc]
        if image_sizes is not None:
            if len(image_sizes) != len(truths):
                raise ValueError(f"evaluate: {len(image_sizes)} image_sizes for {len(truths)} frames")
            sizes = [(int(w), int(h)) for w, h in image_sizes]
    if min_size > 0 and sizes is None:
        raise ValueError("evaluate: min_size needs the frame sizes: pass Samples or image_sizes=[(width, height), ...]")
    ignore = [ignored_boxes(b, *sizes[i], min_size) if sizes is not None else np.zeros(len(b), bool)
              for i, (b, _) in enumerate(pairs)]

    pr = voc_curves(predictions, pairs, ignore)
    ap50 = [None if c is None else average_precision(*c) for c in pr]
    map50_95, ap50_95 = coco_ap(predictions, pairs, ignore, sizes)
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(CLASS_NAMES):
        evaluated = sum(int(((cls == c) & ~ign).sum()) for (_, cls), ign in zip(pairs, ignore, strict=True))
        ignored = sum(int(((cls == c) & ign).sum()) for (_, cls), ign in zip(pairs, ignore, strict=True))
        found = sum(int((np.asarray(d.class_ids) == c).sum()) for d in predictions)
        per_class[name] = {"ap50": ap50[c], "ap50_95": ap50_95[c], "boxes": evaluated, "ignored": ignored,
                           "detections": found}
    result = {
        "map50": _mean(ap50),
        "map50_95": map50_95,
        "per_class": per_class,
        "boxes_evaluated": sum(v["boxes"] for v in per_class.values()),
        "boxes_ignored": sum(v["ignored"] for v in per_class.values()),
        "detections": sum(len(d) for d in predictions),
        "frames": len(pairs),
        "min_size": float(min_size),
    }
    if curves:
        result["curves"] = dict(zip(CLASS_NAMES, pr, strict=True))
    return result


def format_table(result: dict[str, Any]) -> str:
    """The per-class table `fastyolo eval` prints."""

    def f(v: float | None) -> str:
        return "   n/a" if v is None else f"{v:6.3f}"

    lines = [f"{'class':<12}{'boxes':>7}{'ignored':>9}{'dets':>8}{'AP50':>8}{'AP50:95':>9}"]
    for name, row in result["per_class"].items():
        lines.append(f"{name:<12}{row['boxes']:>7}{row['ignored']:>9}{row['detections']:>8}  "
                     f"{f(row['ap50'])}   {f(row['ap50_95'])}")
    lines.append(f"{'all':<12}{result['boxes_evaluated']:>7}{result['boxes_ignored']:>9}{result['detections']:>8}  "
                 f"{f(result['map50'])}   {f(result['map50_95'])}")
    return "\n".join(lines)


def plot_pr_curves(result: dict[str, Any], path: str | os.PathLike, title: str = "") -> None:
    """Precision-recall curves at IoU 0.5 per class (from evaluate(..., curves=True)) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for name, curve in result["curves"].items():
        row = result["per_class"][name]
        if curve is None or not len(curve[0]):
            continue
        recall, precision = curve
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        ax.plot(np.concatenate(([0.0], recall)), np.concatenate((envelope[:1], envelope)), drawstyle="steps-pre",
                label=f"{name}: AP50 {row['ap50']:.3f} ({row['boxes']} boxes)")
    summary = f"mAP@0.5 {result['map50'] or 0:.3f}, mAP@[.5:.95] {result['map50_95'] or 0:.3f}"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"{title}\n{summary}" if title else summary)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    from fastyolo.fileio import atomic_path

    with atomic_path(path) as tmp:  # never half a PNG; the temporary name has no image suffix: say the format
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".").lower() or "png")
    plt.close(fig)
