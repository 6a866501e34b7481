"""The labelling teachers measured against real labels: which teachers, views and fusion `fastyolo label` uses.

Ground truth: kitti_tiny's labels.csv (75 frames, 1242x375: Car; Van and Truck as Truck; Pedestrian and
Person_sitting as Pedestrian; what `fastyolo eval` reads) and the three cameras of pandaset_002 (240
frames, 960x540; its labels' faults are in its README). Nothing is ignored: a box on a KITTI DontCare car
or a van called "car" is a false positive, as `fastyolo eval` would count it.

Each teacher runs once per frame on every view (full frame, native-scale tiles, each flipped), keeping
boxes above --floor; those are cached (--cache) and every variant is a subset of them, fused:

- AP@0.5 per class (VOC all-point, fastyolo.metrics) of the fused boxes, every score;
- Car recall and precision (a detection is a true positive when it is the best-scoring one on a labelled
  car with IoU >= 0.5) at the labelling threshold `--conf` of the variant: the defaults' threshold, and the
  threshold that maximises the Car F1 on kitti_tiny (to compare variants at their best).

    python bench/teachers.py                       # -> bench/artifacts/teachers.json, a markdown table on stdout
    python bench/teachers.py --overlap 0.1         # another tile overlap (the views are run again)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fastyolo.datasets import load_dataset
from fastyolo.detections import Detections
from fastyolo.layout import CLASS_NAMES
from fastyolo.metrics import average_precision, voc_curves
from fastyolo.teacher import Teacher
from fastyolo.teacher_views import (
    DEFAULT_AGNOSTIC,
    DEFAULT_CONF,
    DEFAULT_CONF_TYPE,
    DEFAULT_FLIP,
    DEFAULT_FUSION,
    DEFAULT_FUSION_IOU,
    DEFAULT_OVERLAP,
    DEFAULT_TILES,
    DEFAULT_VIEW_CONF,
    Ensemble,
    View,
    plan_views,
    view_detections,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASETS = {
    "kitti_tiny": SHARED / "kitti_tiny",
    "pandaset back": SHARED / "pandaset_002" / "back_camera",
    "pandaset left": SHARED / "pandaset_002" / "left_camera",
    "pandaset right": SHARED / "pandaset_002" / "right_camera",
}
TEACHERS = {"yolox": SHARED / "teacher" / "yolox_nano.onnx", "picodet": SHARED / "teacher" / "picodet_s_416_coco.onnx"}
CAR = CLASS_NAMES.index("Car")
CACHE_VERSION = 1
TARGET_PRECISION = 0.75  # issue 20: car recall >= 0.75 at precision >= 0.75 on kitti_tiny
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.01), 2)


@dataclass(frozen=True)
class Variant:
    name: str
    teachers: tuple[str, ...]
    views: str = "all"  # full | full+flip | full+tiles | tiles+flip(full) | all
    fusion: str = "wbf"
    iou: float = DEFAULT_FUSION_IOU
    conf_type: str = DEFAULT_CONF_TYPE
    agnostic: bool = True  # the table's base rows cluster class-agnostically; the defaults' row says what label does
    visible: bool = True
    view_conf: float = DEFAULT_VIEW_CONF
    weights: tuple[float, ...] | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def _keep_view(view: View, which: str) -> bool:
    return {"full": not view.tile and not view.flip, "full+flip": not view.tile, "full+tiles": not view.flip,
            "tiles+flip(full)": not (view.tile and view.flip), "all": True}[which]


def run_views(name: str, path: Path, dataset: str, samples, overlap: float, floor: float, cache: Path) -> list:
    """Per frame: [(view, Detections above floor)] for every view (full, tiles, all flipped), cached on disk."""
    stat = path.stat()
    key = hashlib.sha256(json.dumps([CACHE_VERSION, str(path), stat.st_size, stat.st_mtime, dataset, overlap, floor,
                                     len(samples)]).encode()).hexdigest()[:16]
    file = cache / f"{name}_{dataset.replace(' ', '_')}_{key}.pkl"
    if file.is_file():
        with open(file, "rb") as f:
            return pickle.load(f)
    teacher = Teacher(path, conf=floor)
    frames, start = [], time.perf_counter()
    for i, s in enumerate(samples):
        image = s.load_image()
        h, w = image.shape[:2]
        th, tw = teacher.input_size
        frames.append([(v, view_detections(teacher, image, v, floor)) for v in plan_views(w, h, (tw, th), overlap, "all")])
        print(f"\r  {name} on {dataset}: {i + 1}/{len(samples)} frames", end="", file=sys.stderr, flush=True)
    print(f" ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache, delete=False) as f:
        pickle.dump(frames, f)
    os.replace(f.name, file)
    return frames


def fuse(variant: Variant, per_teacher: dict[str, list], frame: int, width: int, height: int) -> Detections:
    """One frame's fused boxes (every score) for a variant, from the cached views."""
    outputs = []
    for t, name in enumerate(variant.teachers):
        for view, d in per_teacher[name][frame]:
            if _keep_view(view, variant.views):
                keep = d.scores >= variant.view_conf
                outputs.append((t, view, Detections(d.boxes[keep], d.scores[keep], d.class_ids[keep])))
    ensemble = Ensemble(teachers=variant.teachers, weights=variant.weights, fusion=variant.fusion,
                        fusion_iou=variant.iou, conf_type=variant.conf_type, agnostic=variant.agnostic,
                        visible=variant.visible, view_conf=variant.view_conf)
    return ensemble.fuse(outputs, width, height)


def measure(preds: list[Detections], truths: list) -> dict:
    """AP@0.5 per class, and (true positives, detections, labelled cars) for Car at each threshold.

    A detection's VOC status does not depend on the threshold (it is a true positive when it is the best-scoring
    detection on a labelled box), so the counts at a threshold are those of the curve's first n detections."""
    curves = voc_curves(preds, truths, [np.zeros(len(b), bool) for b, _ in truths])
    ap = {CLASS_NAMES[c]: (None if cv is None else round(average_precision(*cv), 4)) for c, cv in enumerate(curves)}
    cars = sum(int((c == CAR).sum()) for _, c in truths)
    scores = np.sort(np.concatenate([p.scores[p.class_ids == CAR] for p in preds]))[::-1]
    counts = {}
    for t in THRESHOLDS:
        n = int((scores >= t).sum())
        tp = int(round(curves[CAR][0][n - 1] * cars)) if n and curves[CAR] is not None else 0
        counts[f"{t:.2f}"] = (tp, n, cars)
    return {"ap50": ap, "car_counts": counts}


def rp(counts: tuple[int, int, int]) -> tuple[float, float]:
    tp, found, cars = counts
    return tp / cars if cars else 0.0, tp / found if found else 0.0


def variants() -> list[Variant]:
    both = ("picodet", "yolox")
    v = []
    for t in ("yolox", "picodet"):
        v += [Variant(f"{t}, full frame", (t,), "full", fusion="nms"),
              Variant(f"{t}, full + flip (WBF)", (t,), "full+flip"),
              Variant(f"{t}, full + tiles (pooled NMS)", (t,), "full+tiles", fusion="nms", iou=0.5),
              Variant(f"{t}, full + tiles (WBF)", (t,), "full+tiles"),
              Variant(f"{t}, full + tiles, all flipped (WBF)", (t,), "all")]
    v += [Variant("both, full frame (WBF)", both, "full"),
          Variant("both, full + tiles (pooled NMS)", both, "full+tiles", fusion="nms", iou=0.5),
          Variant("both, full + tiles (WBF)", both, "full+tiles"),
          Variant("both, full + tiles + full flipped (WBF)", both, "tiles+flip(full)"),
          Variant("both, full + tiles, all flipped (WBF)", both, "all")]
    best = v[-1]
    for iou in (0.4, 0.5, 0.6, 0.7):
        v.append(replace(best, name=f"  fusion IoU {iou}", iou=iou))
    v.append(replace(best, name="  tiles vote on every box (no tile regions)", visible=False))
    v.append(replace(best, name="  clusters per class (not agnostic)", agnostic=False))
    v.append(replace(best, name="  score: max, not avg", conf_type="max"))
    for vc in (0.01, 0.1, 0.2):
        v.append(replace(best, name=f"  view threshold {vc}", view_conf=vc))
    v.append(replace(best, name="  weights picodet 2, yolox 1", weights=(2.0, 1.0)))
    # The changes that helped, together.
    per_class = replace(best, agnostic=False)
    v += [replace(per_class, name="both, all flipped, per class, IoU 0.5", iou=0.5),
          replace(per_class, name="both, all flipped, per class, IoU 0.6", iou=0.6),
          replace(per_class, name="both, all flipped, per class, view threshold 0.01", view_conf=0.01),
          replace(per_class, name="both, all flipped, per class, view threshold 0.1", view_conf=0.1),
          replace(per_class, name="both, all flipped, per class, tiles vote on every box", visible=False),
          replace(per_class, name="both, all flipped, per class, weights 2:1", weights=(2.0, 1.0)),
          replace(per_class, name="both, all flipped, per class, weights 2:1, IoU 0.6", weights=(2.0, 1.0), iou=0.6),
          replace(per_class, name="both, full + tiles, per class (no flips)", views="full+tiles"),
          replace(per_class, name="both, full + tiles, per class, weights 2:1", views="full+tiles", weights=(2.0, 1.0)),
          replace(per_class, name="picodet, all flipped, per class", teachers=("picodet",))]
    views = {"all": "all", "full": "tiles+flip(full)", "none": "full+tiles"}[DEFAULT_FLIP] if DEFAULT_TILES else \
        {"all": "full+flip", "full": "full+flip", "none": "full"}[DEFAULT_FLIP]
    v.append(Variant("**the defaults of fastyolo label** (both teachers)", both, views, DEFAULT_FUSION, DEFAULT_FUSION_IOU,
                     DEFAULT_CONF_TYPE, DEFAULT_AGNOSTIC, True, DEFAULT_VIEW_CONF))
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP, help="tile overlap [%(default)s]")
    ap.add_argument("--floor", type=float, default=0.01, help="score floor of the cached views [%(default)s]")
    ap.add_argument("--conf", type=float, default=DEFAULT_CONF, help="the labelling threshold reported [%(default)s]")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "fastyolo-teachers-bench")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "artifacts" / "teachers.json")
    ap.add_argument("--only", default=None, help="run only variants whose name contains this")
    ap.add_argument("--pandaset-every", type=int, default=4,
                    help="every Nth PandaSet frame (10 Hz: neighbours show the same cars) [%(default)s]")
    args = ap.parse_args()
    missing = [str(p) for p in [*DATASETS.values(), *TEACHERS.values()] if not p.exists()]
    if missing:
        sys.exit(f"bench/teachers.py: not found: {', '.join(missing)} (../shared/data beside the repo)")

    data = {name: load_dataset(path)[0] for name, path in DATASETS.items()}
    data = {name: s if name == "kitti_tiny" else s[::args.pandaset_every] for name, s in data.items()}
    views = {t: {d: run_views(t, p, d, s, args.overlap, args.floor, args.cache) for d, s in data.items()}
             for t, p in TEACHERS.items()}
    truths = {d: [(s.boxes, s.class_ids) for s in samples] for d, samples in data.items()}
    results = []
    for variant in variants():
        if args.only and args.only not in variant.name:
            continue
        row: dict = {"variant": variant.name, "settings": {k: getattr(variant, k) for k in (
            "teachers", "views", "fusion", "iou", "conf_type", "agnostic", "visible", "view_conf", "weights")}}
        preds = {d: [fuse(variant, {t: views[t][d] for t in variant.teachers}, i, s.width, s.height)
                     for i, s in enumerate(samples)] for d, samples in data.items()}
        row["per_dataset"] = {d: measure(preds[d], truths[d]) for d in data}
        panda = [d for d in data if d.startswith("pandaset")]
        row["pandaset"] = measure([p for d in panda for p in preds[d]], [t for d in panda for t in truths[d]])
        kitti_counts = row["per_dataset"]["kitti_tiny"]["car_counts"]
        f1 = {t: (2 * r * p / (r + p) if r + p else 0.0) for t, (r, p) in ((t, rp(c)) for t, c in kitti_counts.items())}
        row["best_conf"] = max(f1, key=f1.get)
        at_p = [(rp(c)[0], t) for t, c in kitti_counts.items() if rp(c)[1] >= TARGET_PRECISION]
        row["kitti_recall_at_precision"] = max(at_p) if at_p else (0.0, None)
        results.append(row)
        print_row(row, args.conf)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    out = {"overlap": args.overlap, "floor": args.floor, "conf": args.conf, "pandaset_every": args.pandaset_every,
           "frames": {d: len(s) for d, s in data.items()},
           "rows": results}
    args.json.write_text(json.dumps(out, separators=(",", ":")) + "\n")  # compact: counts at 91 thresholds per row
    print(f"\nwrote {args.json}", file=sys.stderr)


_HEADER_PRINTED = False


def print_row(row: dict, conf: float) -> None:
    global _HEADER_PRINTED
    if not _HEADER_PRINTED:
        print("| variant | KITTI AP Car | Truck | Ped | PandaSet AP Car | Truck | Ped | car R / P @ conf "
              f"{conf:g}: KITTI | PandaSet | best KITTI conf | car R / P there: KITTI | PandaSet | "
              f"KITTI car recall at P >= {TARGET_PRECISION} (conf) |")
        print("| --- |" + " ---: |" * 12)
        _HEADER_PRINTED = True
    k, p = row["per_dataset"]["kitti_tiny"], row["pandaset"]
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    g = lambda c: "{:.2f} / {:.2f}".format(*rp(c))  # noqa: E731
    t, conf = row["best_conf"], f"{conf:.2f}"
    r, at = row["kitti_recall_at_precision"]
    print(f"| {row['variant']} | {f(k['ap50']['Car'])} | {f(k['ap50']['Truck'])} | {f(k['ap50']['Pedestrian'])} | "
          f"{f(p['ap50']['Car'])} | {f(p['ap50']['Truck'])} | {f(p['ap50']['Pedestrian'])} | "
          f"{g(k['car_counts'][conf])} | {g(p['car_counts'][conf])} | {float(t):g} | {g(k['car_counts'][t])} | "
          f"{g(p['car_counts'][t])} | {r:.2f} ({at}) |", flush=True)


if __name__ == "__main__":
    main()
