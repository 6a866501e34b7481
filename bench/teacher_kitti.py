"""Recall and precision of one labelling teacher (YOLOX-nano by default, or --teacher PicoDet) on the full
frame of the 75 kitti_tiny frames (bench/teachers.py measures views, teachers and fusion).

Ground truth: KITTI label_2/ with Car and Van as Car (the teacher README's "cars and vans"), Truck as
Truck, Pedestrian and Person_sitting as Pedestrian. A detection is a true positive when it has IoU >= 0.5
with a not yet matched object of its class (detections taken best score first); it is ignored (neither
true nor false) when it has IoU >= 0.5 with something the evaluation leaves out: a DontCare region, a
Cyclist/Tram/Misc, an object of its class below the height floor, a Van for a Truck detection; otherwise
it is a false positive. "vehicles" merges Car and Truck on both sides (class confusions do not count).

Rows for every object and for objects >= 25 px tall (KITTI's "moderate" height), to compare with the
teacher README's "38 of 53 cars and vans, 3 of 5 trucks, 4 of 12 pedestrians" (31 frames, >= 25 px, score
> 0.35). Both of YOLOX's NMS variants are run on the same network outputs: class-agnostic (the demo's
default, what `fastyolo label` uses) and class-aware (`--class-aware-nms`).

    python bench/teacher_kitti.py                     # -> bench/artifacts/teacher_kitti.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from fastyolo.teacher import DEFAULT_CONF, DEFAULT_IOU, Teacher, map_coco, nms

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MATCH_IOU = 0.5
HEIGHTS = (0, 25)  # all objects; KITTI "moderate" height floor
CLASSES = ("Car", "Truck", "Pedestrian", "vehicles")
KITTI_CLASS = {"Car": "Car", "Van": "Car", "Truck": "Truck", "Pedestrian": "Pedestrian", "Person_sitting": "Pedestrian"}
IGNORED_TYPES = ("DontCare", "Cyclist", "Tram", "Misc")


def cpu_model() -> str | None:
    """lscpu's "Model name", read from /proc/cpuinfo (Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def read_kitti(path: Path) -> list[tuple[str, np.ndarray]]:
    objects = []
    for line in path.read_text().splitlines():
        f = line.split()
        if f:
            objects.append((f[0], np.array([float(v) for v in f[4:8]], np.float64)))
    return objects


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def split_truth(objects, cls: str, min_h: float) -> tuple[np.ndarray, np.ndarray]:
    """(boxes counted, boxes ignored) for a class at a height floor."""
    counted, ignored = [], []
    for kind, box in objects:
        mine = KITTI_CLASS.get(kind)
        in_class = mine is not None and (mine == cls or (cls == "vehicles" and mine in ("Car", "Truck")))
        if in_class:
            (counted if box[3] - box[1] >= min_h else ignored).append(box)
        elif kind in IGNORED_TYPES or (cls == "Truck" and kind == "Van"):
            ignored.append(box)
    as_array = lambda x: np.array(x, np.float64).reshape(-1, 4)  # noqa: E731
    return as_array(counted), as_array(ignored)


def score_frame(det_boxes, det_scores, truth, ignore) -> tuple[int, int, int]:
    """(true positives, false positives, ignored detections) for one class in one frame."""
    tp = fp = ign = 0
    matched = np.zeros(len(truth), bool)
    iou_t, iou_i = iou_matrix(det_boxes, truth), iou_matrix(det_boxes, ignore)
    for d in np.argsort(-det_scores, kind="stable"):
        if len(truth):
            free = np.where(matched, -1.0, iou_t[d])
            best = int(free.argmax())
            if free[best] >= MATCH_IOU:
                matched[best] = True
                tp += 1
                continue
        if len(ignore) and iou_i[d].max() >= MATCH_IOU:
            ign += 1
        else:
            fp += 1
    return tp, fp, ign


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED / "kitti_tiny")
    ap.add_argument("--teacher", type=Path, default=SHARED / "teacher" / "yolox_nano.onnx")
    ap.add_argument("--conf", type=float, default=DEFAULT_CONF)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "artifacts" / "teacher_kitti.json")
    args = ap.parse_args()

    teacher = Teacher(args.teacher, conf=args.conf)
    images = sorted((args.data / "images").glob("*.jpg"))
    modes = {"class-agnostic": True, "class-aware": False}
    keys = [(m, h, c) for m in modes for h in HEIGHTS for c in CLASSES]
    totals = {k: dict(objects=0, found=0, detections=0, tp=0, fp=0, ignored=0) for k in keys}
    for path in images:
        image = cv2.imread(str(path))
        objects = read_kitti(args.data / "label_2" / (path.stem + ".txt"))
        boxes, scores = teacher.candidates(image)  # frame pixels, before NMS
        h, w = image.shape[:2]
        for mode, agnostic in modes.items():
            keep, kept_scores, coco = nms(boxes, scores, args.conf, DEFAULT_IOU, agnostic)
            det_boxes = boxes[keep].clip(0, [w, h, w, h]).astype(np.float64)
            names = np.array([("Car", "Truck", "Pedestrian")[i] if i >= 0 else "" for i in map_coco(coco)])
            for min_h in HEIGHTS:
                for cls in CLASSES:
                    mask = np.isin(names, ["Car", "Truck"]) if cls == "vehicles" else names == cls
                    truth, ignore = split_truth(objects, cls, min_h)
                    tp, fp, ign = score_frame(det_boxes[mask], kept_scores[mask], truth, ignore)
                    t = totals[(mode, min_h, cls)]
                    t["objects"] += len(truth)
                    t["found"] += tp  # each true positive finds one distinct object
                    t["detections"] += int(mask.sum())
                    t["tp"], t["fp"], t["ignored"] = t["tp"] + tp, t["fp"] + fp, t["ignored"] + ign

    rows = []
    for (mode, min_h, cls), t in totals.items():
        recall = t["found"] / t["objects"] if t["objects"] else None
        precision = t["tp"] / (t["tp"] + t["fp"]) if t["tp"] + t["fp"] else None
        rows.append(dict(nms=mode, min_height=min_h, cls=cls, **t, recall=recall, precision=precision))
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for mode in modes:
        print(f"\nteacher {args.teacher.name}, {mode} NMS, score > {args.conf:g}, IoU >= {MATCH_IOU}, {len(images)} frames")
        print(f"{'objects':>10} {'class':<11} {'found/objects':>14} {'recall':>7} {'TP/(TP+FP)':>11} "
              f"{'precision':>9} {'ignored':>8}")
        for row in rows:
            if row["nms"] != mode:
                continue
            height = "all" if row["min_height"] == 0 else f">= {row['min_height']} px"
            print(f"{height:>10} {row['cls']:<11} {row['found']:>6}/{row['objects']:<7} {fmt(row['recall']):>7} "
                  f"{row['tp']:>5}/{row['tp'] + row['fp']:<5} {fmt(row['precision']):>9} {row['ignored']:>8}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "teacher": args.teacher.name, "frames": len(images), "conf": args.conf, "nms_iou": DEFAULT_IOU,
        "match_iou": MATCH_IOU, "input_size": list(teacher.input_size), "machine": cpu_model(),
        "rows": rows,
    }
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
