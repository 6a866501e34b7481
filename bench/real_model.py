"""The first real model: teacher-labelled highway footage, split into whole contiguous segments.

    fastyolo label ../shared/data/video/highway_clip.mp4 --teacher ../shared/data/teacher/yolox_nano.onnx \\
        -o runs/labelled/highway
    python bench/real_model.py split runs/labelled/highway --out runs/data
    # -> runs/data/hw_train (segments 1-3 of the clip), runs/data/hw_heldout (segments 4-5, never trained on)
    fastyolo train --data runs/data/hw_train --val ../shared/data/kitti_tiny --min-size 6 \
        --backbone efficientnet_lite0 --epochs 30 --out runs/train/lite0
    python bench/real_model.py evaluate runs/train/*/best.pt

The clip (../shared/data/video/README.md) is five segments of Udacity's project video joined end to
end: frames [0, 183), [183, 259), [259, 297), [297, 388), [388, 485). Segments 4 and 5 are two cuts
of the same stretch of road (the black and white cars), so they are held out together: a model
that trained on one of them would have seen the other's cars. Udacity's test_images are stills
of that stretch too, so they are not trained on either.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SEGMENTS = ((0, 183), (183, 259), (259, 297), (297, 388), (388, 485))
TRAIN_SEGMENTS = (0, 1, 2)
HELDOUT_SEGMENTS = (3, 4)


def segment_of(frame: int) -> int:
    return next(k for k, (a, b) in enumerate(SEGMENTS) if a <= frame < b)


def split(labelled: Path, out: Path) -> dict[str, dict[str, int]]:
    """Write out/hw_train and out/hw_heldout (labels.csv + images/) from a `fastyolo label` dataset of the clip."""
    frames = {f["file"]: f["frame"] for f in json.loads((labelled / "sources.json").read_text())["frames"]}
    with open(labelled / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    summary = {}
    for name, segments in (("hw_train", TRAIN_SEGMENTS), ("hw_heldout", HELDOUT_SEGMENTS)):
        keep = [r for r in body if segment_of(frames[r[4]]) in segments]
        folder = out / name
        (folder / "images").mkdir(parents=True, exist_ok=False)
        with open(folder / "labels.csv", "w", newline="") as f:
            csv.writer(f).writerows([header, *keep])
        files = sorted({r[4] for r in keep})
        for file in files:
            src, dst = labelled / "images" / file, folder / "images" / file
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        summary[name] = {"frames": len(files), "boxes": len(keep),
                         **{c: sum(r[5] == c for r in keep) for c in ("Car", "Truck", "Pedestrian")}}
    return summary


CLASSES = ("Car", "Truck", "Pedestrian")


def _boxes(labels: Path) -> dict[str, list[list]]:
    """labels.csv rows by frame file: [xmin, ymin, xmax, ymax, class]."""
    with open(labels, newline="") as f:
        rows = list(csv.reader(f))[1:]
    out: dict[str, list[list]] = {}
    for r in rows:
        out.setdefault(r[4], []).append([*map(float, r[:4]), r[5]])
    return out


def _iou(a: list, b: list) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def tighten(projected: Path, teacher: Path, out: Path, iou: float = 0.5) -> dict[str, int]:
    """PandaSet's projected boxes merged with a teacher's (issue 20, item 2).

    Cuboid hulls are 5-15% looser per side than a drawn box, and some visible cars and people are
    unlabelled: a projected box that a teacher box of its class overlaps by >= `iou` takes the
    teacher's (tighter) corners and keeps its class; the projected boxes no teacher box matches stay
    (distant cars the teacher misses); teacher boxes that match no projected box are added (the
    unlabelled ones). `teacher` is `fastyolo label` run on `projected/images`.
    """
    names = {f["file"]: Path(f["source"]).name for f in json.loads((teacher / "sources.json").read_text())["frames"]}
    taught = {names[k]: v for k, v in _boxes(teacher / "labels.csv").items()}
    given = _boxes(projected / "labels.csv")
    counts = {"tightened": 0, "kept": 0, "added": 0}
    rows = []
    for frame in sorted(set(given) | set(taught)):
        free = list(taught.get(frame, []))
        for box in given.get(frame, []):
            scores = [_iou(box, t) if t[4] == box[4] else 0.0 for t in free]
            best = max(range(len(free)), key=scores.__getitem__, default=None)
            if best is not None and scores[best] >= iou:
                rows.append([*free.pop(best)[:4], frame, box[4]])
                counts["tightened"] += 1
            else:
                rows.append([*box[:4], frame, box[4]])
                counts["kept"] += 1
        for t in free:
            rows.append([*t[:4], frame, t[4]])
            counts["added"] += 1
    (out / "images").mkdir(parents=True, exist_ok=False)
    for image in sorted((projected / "images").iterdir()):
        shutil.copyfile(image, out / "images" / image.name)
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["xmin", "ymin", "xmax", "ymax", "Frame", "Label", "Preview URL"],
                                 *([*(f"{v:g}" for v in r[:4]), r[4], r[5], ""] for r in rows)])
    return {**counts, **{c: sum(r[5] == c for r in rows) for c in CLASSES}}


PANDASET = "../shared/data/pandaset_002"
EVAL_SETS = {  # name: (dataset, --min-size, --tiles): held-out highway segments, a held-out city camera, KITTI
    "highway_heldout": ("runs/data_fused/hw_heldout", 0.0, "off"),
    "pandaset_left": (f"{PANDASET}/left_camera", 0.0, "off"),
    "kitti_tiny": ("../shared/data/kitti_tiny", 6.0, "off"),
    "kitti_tiny_tiles": ("../shared/data/kitti_tiny", 6.0, "auto"),
}


def evaluate(models: list[Path], out: Path, sets: list[str] | None = None) -> dict[str, dict]:
    """`fastyolo eval` of each model (a run's best.pt/last.pt or an .onnx) on every EVAL_SETS dataset (or `sets`)."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            key = str(model)
            results[key] = {}
            for name, (data, min_size, tiles) in EVAL_SETS.items():
                if sets and name not in sets:
                    continue
                report = Path(tmp) / f"{len(results)}-{name}.json"
                done = subprocess.run([sys.executable, "-m", "fastyolo.cli", "eval", str(model), "--data", data,
                                       "--min-size", str(min_size), "--tiles", tiles, "--json", str(report)],
                                      stdout=subprocess.DEVNULL)
                if done.returncode:  # fastyolo eval said why in one line on stderr
                    sys.exit(f"bench/real_model.py: fastyolo eval of {model} on {name} failed (exit {done.returncode})")
                figures = json.loads(report.read_text())
                results[key][name] = {"map50": figures["map50"], "map50_95": figures["map50_95"],
                                      **{f"ap50_{c}": v["ap50"] for c, v in figures["per_class"].items()}}
                print(f"{model}: {name} mAP@0.5 {figures['map50']:.3f} "
                      + " ".join(f"{c} {v['ap50']}" for c, v in figures["per_class"].items()), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return results


def soup(runs: list[Path], data: list[Path], out: Path) -> None:
    """The runs' weights averaged (train/soup.py), BatchNorm recomputed over their training frames (`data`)."""
    from fastyolo.train.engine import BN_FRAMES
    from fastyolo.train.soup import average_runs

    from fastyolo.datasets import load_dataset
    from fastyolo.errors import FastYoloError

    try:  # runs that started from different weights, a missing run: one line
        frames = [s for folder in data for s in load_dataset(folder)[0]]
        average_runs(runs, frames, out)
    except FastYoloError as exc:
        sys.exit(f"bench/real_model.py soup: {exc}")
    print(f"{out}: the average of {len(runs)} runs, BatchNorm over {min(len(frames), BN_FRAMES)} of {len(frames)} frames")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="split a labelled highway_clip dataset into training and held-out segments")
    s.add_argument("labelled", type=Path)
    s.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("tighten", help="PandaSet's projected boxes tightened to (and completed by) a teacher's")
    t.add_argument("projected", type=Path)
    t.add_argument("teacher", type=Path)
    t.add_argument("--out", type=Path, required=True)
    e = sub.add_parser("evaluate", help="mAP@0.5 per class of models on every EVAL_SETS dataset")
    e.add_argument("models", type=Path, nargs="+")
    e.add_argument("--json", type=Path, default=Path("bench/artifacts/real_model_eval.json"))
    e.add_argument("--sets", nargs="+", choices=tuple(EVAL_SETS), help="only these datasets [all]")
    i = sub.add_parser("start", help="the starting weights of a run, for `fastyolo train --init` (see soup)")
    i.add_argument("--out", type=Path, required=True)
    i.add_argument("--seed", type=int, default=0)
    u = sub.add_parser("soup", help="average the weights of runs that share one --init, BatchNorm recomputed")
    u.add_argument("runs", type=Path, nargs="+", help="the runs' last.pt")
    u.add_argument("--data", type=Path, nargs="+", required=True, help="their --data folders")
    u.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "start":
        from fastyolo.train.soup import start_weights

        start_weights(args.out, "efficientnet_lite0", seed=args.seed)
    elif args.command == "soup":
        soup(args.runs, args.data, args.out)
    elif args.command == "split":
        print(json.dumps(split(args.labelled, args.out), indent=1))
    elif args.command == "tighten":
        print(json.dumps(tighten(args.projected, args.teacher, args.out)))
    else:
        evaluate(args.models, args.json, args.sets)


if __name__ == "__main__":
    main()
