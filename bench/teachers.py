"""The labelling teachers measured against real labels: which teachers, views and fusion `fastyolo label` uses.

Ground truth: kitti_tiny's labels.csv (75 frames, 1242x375: Car; Van and Truck as Truck; Pedestrian and
Person_sitting as Pedestrian; what `fastyolo eval` reads) and the three cameras of pandaset_002 (240
frames, 960x540; its labels' faults are in its README). Strict counting ignores nothing: a box on a KITTI
DontCare car or a van called "car" is a false positive, as `fastyolo eval` would count it. KITTI's own rule
is reported beside it: a box mostly inside a DontCare region that matches no labelled box is dropped.

Each teacher runs once per frame on every view (full frame, tiles at zooms 1, 1.5 and 2, each flipped),
keeping boxes above --floor; those are cached (--cache) and every variant is a subset of them, fused:

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
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fastyolo.datasets import load_dataset
from fastyolo.detections import Detections
from fastyolo.layout import CLASS_NAMES
from fastyolo.metrics import average_precision, box_iou, voc_curves
from fastyolo.teacher import Teacher
from fastyolo.teacher_views import (
    DEFAULT_AGNOSTIC,
    DEFAULT_CONF,
    DEFAULT_CONF_TYPE,
    DEFAULT_FLIP,
    DEFAULT_FUSION,
    DEFAULT_FUSION_IOU,
    DEFAULT_OVERLAP,
    DEFAULT_TILE_ZOOMS,
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
CACHE_VERSION = 2  # 2: views carry their tile zoom
ZOOMS = (1.0, 1.5, 2.0)  # the tile zooms run once per frame; each variant takes a subset
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
    zooms: tuple[float, ...] = (1.0,)  # which tile zooms' views go in (1: native scale)
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def _keep_view(view: View, which: str, zooms: tuple[float, ...] = (1.0,)) -> bool:
    if view.tile and view.zoom not in zooms:
        return False
    return {"full": not view.tile and not view.flip, "full+flip": not view.tile, "full+tiles": not view.flip,
            "tiles+flip(full)": not (view.tile and view.flip), "all": True}[which]


def run_views(name: str, path: Path, dataset: str, samples, overlap: float, floor: float, cache: Path) -> list:
    """Per frame: [(view, Detections above floor)] for every view (full, tiles, all flipped), cached on disk."""
    stat = path.stat()
    key = hashlib.sha256(json.dumps([CACHE_VERSION, str(path), stat.st_size, stat.st_mtime, dataset, overlap, floor, ZOOMS,
                                     len(samples)]).encode()).hexdigest()[:16]
    file = cache / f"{name}_{dataset.replace(' ', '_')}_{key}.npz"
    if file.is_file():
        try:
            return _load_views(file)
        except (OSError, ValueError, KeyError) as exc:  # a broken or foreign file: run the views again
            print(f"  {file.name}: unreadable cache ({exc}), running the views again", file=sys.stderr)
    teacher = Teacher(path, conf=floor)
    frames, start = [], time.perf_counter()
    for i, s in enumerate(samples):
        image = s.load_image()
        h, w = image.shape[:2]
        th, tw = teacher.input_size
        views = plan_views(w, h, (tw, th), overlap, "all", ZOOMS)
        frames.append([(v, view_detections(teacher, image, v, floor)) for v in views])
        print(f"\r  {name} on {dataset}: {i + 1}/{len(samples)} frames", end="", file=sys.stderr, flush=True)
    print(f" ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache, suffix=".npz", delete=False) as f:
        _save_views(f, frames)
    os.replace(f.name, file)
    return frames


def _save_views(f, frames: list) -> None:
    """Plain arrays, no pickle: the cache sits in a shared temp folder, where anyone could plant a file."""
    rows = [(i, v.x1, v.y1, v.x2, v.y2, v.flip, v.tile, v.zoom, len(d)) for i, fr in enumerate(frames) for v, d in fr]
    dets = [d for fr in frames for _, d in fr]
    np.savez(f, views=np.array(rows, np.float64).reshape(-1, 9),
             boxes=np.concatenate([d.boxes for d in dets]).reshape(-1, 4) if dets else np.zeros((0, 4), np.float32),
             scores=np.concatenate([d.scores for d in dets]) if dets else np.zeros(0, np.float32),
             class_ids=np.concatenate([d.class_ids for d in dets]) if dets else np.zeros(0, np.int64))


def _load_views(file: Path) -> list:
    with np.load(file, allow_pickle=False) as z:
        rows, boxes, scores, class_ids = z["views"], z["boxes"], z["scores"], z["class_ids"]
    frames: list = [[] for _ in range(int(rows[:, 0].max()) + 1 if len(rows) else 0)]
    at = 0
    for i, x1, y1, x2, y2, flip, tile, zoom, n in rows:
        n = int(n)
        view = View(int(x1), int(y1), int(x2), int(y2), bool(flip), bool(tile), float(zoom))
        frames[int(i)].append((view, Detections(boxes[at:at + n], scores[at:at + n], class_ids[at:at + n])))
        at += n
    return frames


def fuse(variant: Variant, per_teacher: dict[str, list], frame: int, width: int, height: int) -> Detections:
    """One frame's fused boxes (every score) for a variant, from the cached views."""
    outputs = []
    for t, name in enumerate(variant.teachers):
        for view, d in per_teacher[name][frame]:
            if _keep_view(view, variant.views, variant.zooms):
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


def dontcare_regions(samples) -> list[np.ndarray]:
    """Per KITTI frame, its DontCare boxes (label_2/: regions of objects too far or too hidden to label)."""
    folder = DATASETS["kitti_tiny"] / "label_2"
    out = []
    for s in samples:
        rows = [line.split() for line in (folder / f"{Path(s.image_path).stem}.txt").read_text().splitlines()]
        out.append(np.array([[float(v) for v in r[4:8]] for r in rows if r and r[0] == "DontCare"], np.float32)
                   .reshape(-1, 4))
    return out


def without_dontcare(pred: Detections, truth: tuple, regions: np.ndarray, min_ioa: float = 0.5) -> Detections:
    """KITTI's rule: a box mostly inside a DontCare region (>= min_ioa of its area) that matches no labelled box
    of its class (IoU >= 0.5) counts as neither right nor wrong: it is dropped before scoring."""
    if not len(pred) or not len(regions):
        return pred
    b = pred.boxes
    ix = np.clip(np.minimum(b[:, None, 2], regions[None, :, 2]) - np.maximum(b[:, None, 0], regions[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(b[:, None, 3], regions[None, :, 3]) - np.maximum(b[:, None, 1], regions[None, :, 1]), 0, None)
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6)
    inside = ((ix * iy) / area[:, None]).max(axis=1) >= min_ioa
    boxes, classes = truth
    matched = np.zeros(len(b), bool)
    if len(boxes):
        iou = box_iou(b, np.asarray(boxes, np.float32))
        matched = ((iou >= 0.5) & (pred.class_ids[:, None] == np.asarray(classes)[None, :])).any(axis=1)
    keep = ~inside | matched
    return Detections(pred.boxes[keep], pred.scores[keep], pred.class_ids[keep])


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
    # Zoomed tiles: smaller tiles than the teacher's input, enlarged into it (distant cars seen larger).
    for zooms in ((1.5,), (2.0,), (1.0, 1.5), (1.0, 2.0), (1.0, 1.5, 2.0)):
        label = " + ".join(f"{z:g}" for z in zooms)
        v.append(replace(per_class, name=f"both, all flipped, per class, tile zoom {label}", zooms=zooms))
    for zooms in ((1.0, 1.5), (1.0, 2.0)):
        label = " + ".join(f"{z:g}" for z in zooms)
        v.append(replace(per_class, name=f"both, full + tiles, per class (no flips), tile zoom {label}",
                         views="full+tiles", zooms=zooms))
    views = {"all": "all", "full": "tiles+flip(full)", "none": "full+tiles"}[DEFAULT_FLIP] if DEFAULT_TILES else \
        {"all": "full+flip", "full": "full+flip", "none": "full"}[DEFAULT_FLIP]
    v.append(Variant("**the defaults of fastyolo label** (both teachers)", both, views, DEFAULT_FUSION, DEFAULT_FUSION_IOU,
                     DEFAULT_CONF_TYPE, DEFAULT_AGNOSTIC, True, DEFAULT_VIEW_CONF, zooms=DEFAULT_TILE_ZOOMS))
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
    dontcare = dontcare_regions(data["kitti_tiny"])
    results = []
    for variant in variants():
        if args.only and args.only not in variant.name:
            continue
        row: dict = {"variant": variant.name, "settings": {k: getattr(variant, k) for k in (
            "teachers", "views", "fusion", "iou", "conf_type", "agnostic", "visible", "view_conf", "weights",
            "zooms")}}
        preds = {d: [fuse(variant, {t: views[t][d] for t in variant.teachers}, i, s.width, s.height)
                     for i, s in enumerate(samples)] for d, samples in data.items()}
        row["per_dataset"] = {d: measure(preds[d], truths[d]) for d in data}
        row["kitti_dontcare_ignored"] = measure([without_dontcare(p, t, r) for p, t, r in zip(
            preds["kitti_tiny"], truths["kitti_tiny"], dontcare, strict=True)], truths["kitti_tiny"])
        panda = [d for d in data if d.startswith("pandaset")]
        row["pandaset"] = measure([p for d in panda for p in preds[d]], [t for d in panda for t in truths[d]])
        kitti_counts = row["per_dataset"]["kitti_tiny"]["car_counts"]
        f1 = {t: (2 * r * p / (r + p) if r + p else 0.0) for t, (r, p) in ((t, rp(c)) for t, c in kitti_counts.items())}
        row["best_conf"] = max(f1, key=f1.get)
        at_p = [(rp(c)[0], t) for t, c in kitti_counts.items() if rp(c)[1] >= TARGET_PRECISION]
        row["kitti_recall_at_precision"] = max(at_p) if at_p else (0.0, None)
        ignored = row["kitti_dontcare_ignored"]["car_counts"]
        at_p = [(rp(c)[0], t) for t, c in ignored.items() if rp(c)[1] >= TARGET_PRECISION]
        row["kitti_recall_at_precision_dontcare_ignored"] = max(at_p) if at_p else (0.0, None)
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
              f"KITTI car recall at P >= {TARGET_PRECISION} (conf) | the same, DontCare ignored: KITTI AP Car | "
              f"car R / P @ {conf:g} | car recall at P >= {TARGET_PRECISION} (conf) |")
        print("| --- |" + " ---: |" * 15)
        _HEADER_PRINTED = True
    k, p = row["per_dataset"]["kitti_tiny"], row["pandaset"]
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    g = lambda c: "{:.2f} / {:.2f}".format(*rp(c))  # noqa: E731
    t, conf = row["best_conf"], f"{conf:.2f}"
    r, at = row["kitti_recall_at_precision"]
    ig = row["kitti_dontcare_ignored"]
    ri, ati = row["kitti_recall_at_precision_dontcare_ignored"]
    print(f"| {row['variant']} | {f(k['ap50']['Car'])} | {f(k['ap50']['Truck'])} | {f(k['ap50']['Pedestrian'])} | "
          f"{f(p['ap50']['Car'])} | {f(p['ap50']['Truck'])} | {f(p['ap50']['Pedestrian'])} | "
          f"{g(k['car_counts'][conf])} | {g(p['car_counts'][conf])} | {float(t):g} | {g(k['car_counts'][t])} | "
          f"{g(p['car_counts'][t])} | {r:.3f} ({at}) | {f(ig['ap50']['Car'])} | {g(ig['car_counts'][conf])} | "
          f"{ri:.3f} ({ati}) |", flush=True)


if __name__ == "__main__":
    main()
