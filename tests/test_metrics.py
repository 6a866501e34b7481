"""mAP: hand-checkable cases, the VOC devkit loop and pycocotools as references, the min_size ignore rule on KITTI."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastyolo.datasets import Sample, load_dataset
from fastyolo.detections import Detections
from fastyolo.layout import CLASSES, INPUT_SIZE
from fastyolo.metrics import coco_inputs, coco_precision_summary, evaluate, format_table, ignored_boxes, voc_ap50


def _dets(boxes, scores, classes) -> Detections:
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                      np.asarray(classes, np.int32))


def _perfect(samples: list[Sample]) -> list[Detections]:
    return [_dets(s.boxes, np.linspace(0.9, 0.5, len(s.boxes)), s.class_ids) for s in samples]


@pytest.fixture(scope="module")
def kitti_samples(kitti_dir: Path) -> list[Sample]:
    return load_dataset(kitti_dir)[0]


def test_predictions_equal_to_truth_score_one(kitti_samples):
    result = evaluate(_perfect(kitti_samples), kitti_samples)
    assert result["map50"] == pytest.approx(1.0) and result["map50_95"] == pytest.approx(1.0)
    assert {name: row["boxes"] for name, row in result["per_class"].items()} == {"Car": 209, "Truck": 35, "Pedestrian": 41}
    assert result["boxes_evaluated"] == 285 and result["boxes_ignored"] == 0 and result["detections"] == 285
    assert result["frames"] == 75
    for row in result["per_class"].values():
        assert row["ap50"] == pytest.approx(1.0) and row["ap50_95"] == pytest.approx(1.0)
    assert "Pedestrian" in format_table(result)


# Four 100x100 Cars in two 400x300 frames.
CARS = [np.array([[0, 0, 100, 100], [200, 100, 300, 200]], np.float32),
        np.array([[50, 50, 150, 150], [250, 0, 350, 100]], np.float32)]
TRUTHS = [(b, np.zeros(len(b), np.int64)) for b in CARS]
SIZES = [(400, 300), (400, 300)]


def _shifted(dx: float, shifted_score: float) -> list[Detections]:
    """The four boxes detected exactly, except the last one moved right by dx pixels."""
    moved = CARS[1].copy()
    moved[1, [0, 2]] += dx
    return [_dets(CARS[0], [0.9, 0.8], [0, 0]), _dets(moved, [0.7, shifted_score], [0, 0])]


def test_one_box_shifted_off_target_known_drop():
    # IoU 60/140 < 0.5: a false positive and a missed car at every threshold.
    low = evaluate(_shifted(40, 0.1), TRUTHS, image_sizes=SIZES)
    # ranked TP TP TP FP: recall 0.75 at precision 1, nothing after -> VOC 0.75; COCO 101-point: 76/101
    assert low["map50"] == pytest.approx(0.75)
    assert low["map50_95"] == pytest.approx(76 / 101)
    high = evaluate(_shifted(40, 0.95), TRUTHS, image_sizes=SIZES)
    # ranked FP TP TP TP: precision 1/2, 2/3, 3/4 at recall .25, .5, .75 -> envelope 0.75 up to 0.75
    assert high["map50"] == pytest.approx(0.75 * 0.75)
    assert high["map50_95"] == pytest.approx(0.75 * 76 / 101)
    assert high["per_class"]["Truck"]["ap50"] is None and high["per_class"]["Car"]["boxes"] == 4


def test_one_box_shifted_between_thresholds():
    # IoU 80/120 = 0.667: a true positive at IoU 0.50, 0.55, 0.60, 0.65, a miss + false positive above.
    result = evaluate(_shifted(20, 0.1), TRUTHS, image_sizes=SIZES)
    assert result["map50"] == pytest.approx(1.0)
    assert result["map50_95"] == pytest.approx((4 * 1.0 + 6 * 76 / 101) / 10)


def test_detections_on_ignored_boxes_are_not_false_positives():
    # min_size 20 at the 224 input: in a 400x300 frame a box must be 400*20/224 = 35.7 px wide to count.
    boxes = np.array([[10, 10, 110, 110], [200, 50, 230, 150], [300, 200, 390, 215]], np.float32)
    truths = [(boxes, np.zeros(3, np.int64))]
    sizes = [(400, 300)]
    np.testing.assert_array_equal(ignored_boxes(boxes, 400, 300, 20), [False, True, True])
    # The two ignored boxes are found with the highest scores, the one real box last.
    dets = [_dets(boxes[[1, 2, 0]], [0.9, 0.8, 0.1], [0, 0, 0])]
    result = evaluate(dets, truths, image_sizes=sizes, min_size=20)
    assert result["boxes_evaluated"] == 1 and result["boxes_ignored"] == 2 and result["detections"] == 3
    assert result["map50"] == pytest.approx(1.0) and result["map50_95"] == pytest.approx(1.0)
    # Without the rule all three boxes count and all three are found.
    plain = evaluate(dets, truths, image_sizes=sizes)
    assert plain["boxes_ignored"] == 0 and plain["map50"] == pytest.approx(1.0)
    # Moving the detections off the ignored boxes makes them false positives ranked first: the AP falls.
    off = [_dets(boxes[[1, 2, 0]] + [[0, 120, 0, 120], [-250, -150, -250, -150], [0, 0, 0, 0]], [0.9, 0.8, 0.1], [0, 0, 0])]
    moved = evaluate(off, truths, image_sizes=sizes, min_size=20)
    assert moved["map50"] == pytest.approx(1 / 3) and moved["map50_95"] == pytest.approx(1 / 3)
    # Detections on ignored boxes only: nothing found, nothing wrongly found.
    only = evaluate([_dets(boxes[[1, 2]], [0.9, 0.8], [0, 0])], truths, image_sizes=sizes, min_size=20)
    assert only["map50"] == 0.0 and only["map50_95"] == 0.0 and only["detections"] == 2


def test_classes_without_truth_are_left_out_of_the_mean():
    truths = [(CARS[0], np.zeros(2, np.int64))]
    dets = [_dets(np.vstack([CARS[0], [[300, 200, 350, 260]]]), [0.9, 0.8, 0.7], [0, 0, 2])]  # a Pedestrian nobody labelled
    result = evaluate(dets, truths)
    assert result["per_class"]["Pedestrian"]["ap50"] is None and result["per_class"]["Pedestrian"]["ap50_95"] is None
    assert result["per_class"]["Pedestrian"]["detections"] == 1
    assert result["map50"] == pytest.approx(1.0) and result["map50_95"] == pytest.approx(1.0)
    empty = evaluate([Detections.empty()], [(np.zeros((0, 4)), np.zeros(0, np.int64))])
    assert empty["map50"] is None and empty["map50_95"] is None
    nothing_found = evaluate([Detections.empty()], truths)
    assert nothing_found["map50"] == 0.0 and nothing_found["map50_95"] == 0.0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="2 predictions for 1 frames"):
        evaluate([Detections.empty()] * 2, TRUTHS[:1])
    with pytest.raises(ValueError, match="min_size needs the frame sizes"):
        evaluate([Detections.empty()], TRUTHS[:1], min_size=6)


def test_kitti_ignore_count_matches_an_independent_count(kitti_dir: Path, kitti_samples):
    # Independently: labels.csv rows and the decoded frame sizes, the rule written out by hand.
    sizes: dict[str, tuple[int, int]] = {}
    small = 0
    with open(kitti_dir / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["Frame"] not in sizes:
                h, w = cv2.imread(str(kitti_dir / "images" / row["Frame"])).shape[:2]
                sizes[row["Frame"]] = (w, h)
            w, h = sizes[row["Frame"]]
            bw = (float(row["xmax"]) - float(row["xmin"])) * INPUT_SIZE / w
            bh = (float(row["ymax"]) - float(row["ymin"])) * INPUT_SIZE / h
            small += bw < 6 or bh < 6
    assert small == 57  # of 285; the frames are 1224x370 to 1242x375
    result = evaluate(_perfect(kitti_samples), kitti_samples, min_size=6)
    assert result["boxes_ignored"] == small and result["boxes_evaluated"] == 285 - small
    assert result["map50"] == pytest.approx(1.0) and result["map50_95"] == pytest.approx(1.0)


def _noisy(samples: list[Sample], seed: int) -> list[Detections]:
    """Realistic detector output: most boxes found with jitter, some class mistakes, duplicates, false alarms."""
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        keep = rng.random(len(s.boxes)) < 0.8
        boxes = s.boxes[keep].astype(np.float64)
        size = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
        boxes = boxes + rng.normal(0, 0.12, boxes.shape) * size
        classes = np.where(rng.random(len(boxes)) < 0.1, rng.integers(0, CLASSES, len(boxes)), s.class_ids[keep])
        dup = rng.random(len(boxes)) < 0.2
        boxes = np.vstack([boxes, boxes[dup] + rng.normal(0, 3, (dup.sum(), 4))])
        classes = np.concatenate([classes, classes[dup]])
        n_fp = rng.integers(0, 6)
        xy = rng.uniform([0, 0], [s.width - 60, s.height - 40], (n_fp, 2))
        wh = rng.uniform([4, 4], [120, 80], (n_fp, 2))
        boxes = np.vstack([boxes, np.hstack([xy, xy + wh])])
        classes = np.concatenate([classes, rng.integers(0, CLASSES, n_fp)])
        x1, x2 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
        y1, y2 = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
        scores = rng.random(len(boxes))
        out.append(_dets(np.stack([x1, y1, x2, y2], 1), scores, classes))
    return out


def _voc_devkit(preds: list[Detections], truths, ignore, cls: int, thr: float = 0.5) -> float | None:
    """The VOC devkit's voc_eval loop, transcribed (continuous boxes, IoU >= thr as in VOCevaldet.m)."""
    records = {}
    npos = 0
    for i, ((b, c), ign) in enumerate(zip(truths, ignore, strict=True)):
        m = c == cls
        records[i] = {"bbox": b[m].astype(np.float64), "difficult": ign[m], "det": [False] * int(m.sum())}
        npos += int((~ign[m]).sum())
    if npos == 0:
        return None
    image_ids, confidence, bbs = [], [], []
    for i, d in enumerate(preds):
        for box, score, c in zip(d.boxes, d.scores, d.class_ids, strict=True):
            if c == cls:
                image_ids.append(i)
                confidence.append(score)
                bbs.append(box.astype(np.float64))
    order = np.argsort(-np.array(confidence), kind="stable")
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, k in enumerate(order):
        r, bb = records[image_ids[k]], bbs[k]
        ovmax, jmax = -np.inf, -1
        gt = r["bbox"]
        if gt.size:
            iw = np.maximum(np.minimum(gt[:, 2], bb[2]) - np.maximum(gt[:, 0], bb[0]), 0.0)
            ih = np.maximum(np.minimum(gt[:, 3], bb[3]) - np.maximum(gt[:, 1], bb[1]), 0.0)
            inter = iw * ih
            uni = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]) - inter
            overlaps = inter / uni
            ovmax, jmax = overlaps.max(), int(overlaps.argmax())
        if ovmax >= thr:
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    tp[d] = 1.0
                    r["det"][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("min_size", [0.0, 6.0])
def test_voc_ap50_equals_the_devkit_loop(kitti_samples, seed: int, min_size: float):
    preds = _noisy(kitti_samples, seed)
    truths = [(s.boxes, s.class_ids) for s in kitti_samples]
    ignore = [ignored_boxes(s.boxes, s.width, s.height, min_size) for s in kitti_samples]
    ours = voc_ap50(preds, truths, ignore)
    expected = [_voc_devkit(preds, truths, ignore, c) for c in range(CLASSES)]
    assert all(e is not None and 0.05 < e < 0.95 for e in expected)  # the noise leaves something to measure
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    result = evaluate(preds, kitti_samples, min_size=min_size)
    assert result["map50"] == pytest.approx(np.mean(expected), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("min_size", [0.0, 6.0])
def test_coco_figures_equal_pycocotools(kitti_samples, seed: int, min_size: float):
    pytest.importorskip("pycocotools", reason="the cross-check needs pycocotools (the [dev] extra)")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    preds = _noisy(kitti_samples, seed)
    result = evaluate(preds, kitti_samples, min_size=min_size)
    ignore = [ignored_boxes(s.boxes, s.width, s.height, min_size) for s in kitti_samples]
    gt, dets = coco_inputs(preds, [(s.boxes, s.class_ids) for s in kitti_samples], ignore)
    assert sum(a["iscrowd"] for a in gt["annotations"]) == result["boxes_ignored"]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        engine = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        engine.evaluate()
        engine.accumulate()
        engine.summarize()
    overall, per_class = coco_precision_summary(engine.eval["precision"])
    assert overall == pytest.approx(engine.stats[0], abs=1e-12)
    assert 0.05 < overall < 0.9
    assert result["map50_95"] == pytest.approx(overall, abs=1e-6)
    for name, expected in zip(result["per_class"], per_class, strict=True):
        assert result["per_class"][name]["ap50_95"] == pytest.approx(expected, abs=1e-6)
