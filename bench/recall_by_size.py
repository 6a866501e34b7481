"""Where a model's AP@0.5 goes: Car recall by object height, at two IoU thresholds, on labelled frames.

    python bench/recall_by_size.py --data runs/data_fused/hw_heldout --model A.onnx B.onnx
    python bench/recall_by_size.py --data ../shared/data/pandaset_002/left_camera --model A.onnx --iou 0.3 0.5

For each model every frame runs once through the Detector (conf --conf, the packaged NMS); a labelled Car
counts as found at IoU t when a detected Car overlaps it by at least t. Found at 0.3 but not at 0.5: the
model saw the car and placed its box loosely (or the label is off); not found at 0.3: it missed the car. No
timing is printed: the figures do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from fastyolo.datasets import load_dataset
from fastyolo.detector import Detector
from fastyolo.errors import FastYoloError
from fastyolo.layout import CLASS_NAMES
from fastyolo.metrics import box_iou

HEIGHTS = (0, 20, 40, 80)  # lower edges of the height buckets, pixels of the frame
CAR = CLASS_NAMES.index("Car")


def bucket_names() -> list[str]:
    edges = [*HEIGHTS, None]
    return [f"{lo}-{hi}px" if hi else f">={lo}px" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def recall_by_size(model: Path, data: Path, ious: list[float], conf: float) -> dict[str, list[int] | int]:
    """{"labels": per bucket, "found@t": per bucket for each t in ious, "detections": Car detections in all}."""
    samples, _report = load_dataset(data)
    detector = Detector(str(model), conf=conf)
    labels = np.zeros(len(HEIGHTS), np.int64)
    found = {t: np.zeros(len(HEIGHTS), np.int64) for t in ious}
    detections = 0
    for sample in samples:
        frame = cv2.imread(str(sample.image_path))
        if frame is None:
            raise FastYoloError(f"{sample.image_path}: not an image OpenCV can read")
        got = detector.detect(frame)
        truth = sample.boxes[sample.class_ids == CAR].astype(np.float64)
        boxes = got.boxes[got.class_ids == CAR].astype(np.float64)
        detections += len(boxes)
        bucket = np.searchsorted(HEIGHTS, truth[:, 3] - truth[:, 1], side="right") - 1
        np.add.at(labels, bucket, 1)
        if len(truth) and len(boxes):
            best = box_iou(truth, boxes).max(axis=1)
            for t in ious:
                np.add.at(found[t], bucket[best >= t], 1)
    return {"labels": labels.tolist(), **{f"found@{t:g}": v.tolist() for t, v in found.items()},
            "detections": detections}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a labelled folder (labels.csv or label_2/)")
    p.add_argument("--model", type=Path, nargs="+", required=True, help="ONNX models (or a TensorRT .plan)")
    p.add_argument("--iou", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--conf", type=float, default=0.3, help="detections below this score are not counted [0.3]")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    try:
        results = {str(m): recall_by_size(m, args.data, args.iou, args.conf) for m in args.model}
    except FastYoloError as exc:
        sys.exit(f"bench/recall_by_size.py: {exc}")
    names = bucket_names()
    print(f"{args.data}: Car recall by label height at conf {args.conf:g}")
    print(f"{'model':40} {'IoU':>5} " + " ".join(f"{n:>12}" for n in names) + "  detections")
    for model, r in results.items():
        for t in args.iou:
            cells = [f"{f}/{n}" for f, n in zip(r[f"found@{t:g}"], r["labels"], strict=True)]
            print(f"{model[-40:]:40} {t:5g} " + " ".join(f"{c:>12}" for c in cells) + f"  {r['detections']}")
    if args.json:
        try:
            args.json.write_text(json.dumps({"data": str(args.data), "conf": args.conf, "buckets": names,
                                             "models": results}, indent=1) + "\n")
        except OSError as exc:
            sys.exit(f"bench/recall_by_size.py: cannot write {args.json}: {exc.strerror}")


if __name__ == "__main__":
    main()
