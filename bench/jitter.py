"""Frame-to-frame jitter of tracked boxes, raw vs smoothed, and the lag smoothing costs.

Two measurements, each with the same detections fed to ByteTrack and then smoothed three ways
(fastyolo.track: "none" = raw boxes, "kalman" = constant-velocity Kalman, "ema" = moving average):

1. The real highway clip (no ground truth): jitter only.
2. Known motion: a crop window pans and zooms smoothly across real kitti_tiny frames, so every
   labelled box's true path is known (its labels.csv box mapped through the same warp). Jitter
   of the truth itself is the floor; error against the truth shows lag; identity switches count
   how often a true object's track id changes.

Jitter per track, over consecutive frames: 1 - IoU(box_t, box_t+1), and the centre's second
difference |c_t+1 - 2 c_t + c_t-1| (px, and % of the box size sqrt(w h)); steady motion scores 0.

    python bench/jitter.py --model runs/overfit/best.onnx --json bench/jitter.json --plot docs/jitter.png
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from fastyolo import CLASS_NAMES, Detector
from fastyolo.bench import sample_video
from fastyolo.detections import Detections
from fastyolo.track import SMOOTHERS, Tracker, detect_for_tracking

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MATCH_IOU = 0.3  # a tracked box "is" a true object when their IoU is at least this (Hungarian matching)


# ----------------------------------------------------------------------------- known-motion sequences
def read_labels(kitti_dir: Path) -> dict[str, list[tuple[np.ndarray, int]]]:
    """labels.csv (Udacity crowdAI layout) -> {image name: [(x1 y1 x2 y2, class id)]}."""
    out: dict[str, list[tuple[np.ndarray, int]]] = defaultdict(list)
    with (kitti_dir / "labels.csv").open() as f:
        for row in csv.DictReader(f):
            if row["Label"] in CLASS_NAMES:
                box = np.array([float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
                out[row["Frame"]].append((box, CLASS_NAMES.index(row["Label"])))
    return out


def pan_zoom(image: np.ndarray, boxes: np.ndarray, frames: int = 80, pan: float = 15.0, zoom: float = 1.05):
    """A smooth pan (by 2 `pan` px left to right, `pan` / 2 up and down) and zoom (1 -> `zoom` -> 1) of a frame.

    Small on purpose: the 75-frame model has memorised its frames' positions and finds few objects
    once they move by more than ~15 px or grow by more than ~5 % (bench/RESULTS.md). Yields
    (frame, true boxes (K, 4), visible mask (K,)) per step; a box is visible when at least 60 % of
    it is inside the frame and it is at least 12 px tall.
    """
    h, w = image.shape[:2]
    cx, cy = w / 2, h / 2
    for i in range(frames):
        t = i / (frames - 1)
        z = 1 + (zoom - 1) * math.sin(math.pi * t)
        dx = pan * (2 * (1 - math.cos(math.pi * t)) / 2 - 1)  # eased from -pan to +pan
        dy = pan / 2 * math.sin(2 * math.pi * t)
        warp = np.array([[z, 0, cx - z * cx + dx], [0, z, cy - z * cy + dy]])
        frame = cv2.warpAffine(image, warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        true = boxes * z + [cx - z * cx + dx, cy - z * cy + dy] * 2
        clipped = np.clip(true, 0, [w, h, w, h])
        area = (true[:, 2] - true[:, 0]) * (true[:, 3] - true[:, 1])
        inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        visible = (inside >= 0.6 * area) & (clipped[:, 3] - clipped[:, 1] >= 12)
        yield frame, clipped, visible


def pick_frames(kitti_dir: Path, count: int) -> list[str]:
    """The frames with the most objects at least 25 px tall: the richest tracking scenes."""
    labels = read_labels(kitti_dir)
    def rich(name: str) -> int:
        return sum(1 for box, _ in labels[name] if box[3] - box[1] >= 25)
    return sorted(labels, key=lambda n: (-rich(n), n))[:count]


# ----------------------------------------------------------------------------- metrics
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def tracks_of(per_frame: list[Detections]) -> dict[int, dict[int, np.ndarray]]:
    """{track id: {frame: box}} from per-frame tracked detections."""
    tracks: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    for f, dets in enumerate(per_frame):
        for box, tid in zip(dets.boxes, dets.track_ids, strict=True):
            tracks[int(tid)][f] = box.astype(np.float64)
    return tracks


def jitter(tracks: dict[int, dict[int, np.ndarray]]) -> dict[str, float]:
    """Mean 1 - IoU of consecutive boxes and mean centre second difference (px and % of box size)."""
    one_minus_iou, accel, accel_rel = [], [], []
    for boxes in tracks.values():
        for f, box in boxes.items():
            nxt = boxes.get(f + 1)
            if nxt is not None:
                one_minus_iou.append(1.0 - box_iou(box[None], nxt[None])[0, 0])
            prev = boxes.get(f - 1)
            if prev is not None and nxt is not None:
                centre = lambda b: (b[:2] + b[2:]) / 2  # noqa: E731
                a = float(np.linalg.norm(centre(nxt) - 2 * centre(box) + centre(prev)))
                accel.append(a)
                accel_rel.append(100 * a / math.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1.0)))
    mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
    return {"one_minus_iou": mean(one_minus_iou), "centre_accel_px": mean(accel), "centre_accel_pct": mean(accel_rel),
            "pairs": len(one_minus_iou)}


def against_truth(per_frame: list[Detections], truth: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Match tracked boxes to true boxes per frame (Hungarian on IoU >= MATCH_IOU).

    Returns recall, mean IoU and centre error of matched boxes, the frame-to-frame change of that
    error (jitter with the true motion removed: 0 for a box that follows the truth with a constant
    offset), identity switches (a true object
    matched to a different track id than the last time it was matched, as in CLEAR-MOT) and
    track ids per true object.
    """
    last: dict[int, int] = {}
    last_error: dict[int, tuple[int, int, np.ndarray]] = {}  # object -> (frame, track id, centre error vector)
    steps = []
    ids_per_object: dict[int, set[int]] = defaultdict(set)
    switches = matched = visible_total = 0
    ious, errors = [], []
    for f, (dets, (boxes, visible)) in enumerate(zip(per_frame, truth, strict=True)):
        obj = np.flatnonzero(visible)
        visible_total += len(obj)
        if len(obj) == 0 or len(dets) == 0:
            continue
        iou = box_iou(boxes[obj], dets.boxes.astype(np.float64))
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols, strict=True):
            if iou[r, c] < MATCH_IOU:
                continue
            o, tid = int(obj[r]), int(dets.track_ids[c])
            matched += 1
            ious.append(iou[r, c])
            t, d = boxes[o], dets.boxes[c].astype(np.float64)
            error = (d[:2] + d[2:]) / 2 - (t[:2] + t[2:]) / 2
            errors.append(float(np.linalg.norm(error)))
            prev = last_error.get(o)
            if prev is not None and prev[0] == f - 1 and prev[1] == tid:
                steps.append(float(np.linalg.norm(error - prev[2])))
            last_error[o] = (f, tid, error)
            if o in last and last[o] != tid:
                switches += 1
            last[o] = tid
            ids_per_object[o].add(tid)
    return {
        "recall": matched / max(visible_total, 1),
        "iou_with_truth": float(np.mean(ious)) if ious else float("nan"),
        "centre_error_px": float(np.mean(errors)) if errors else float("nan"),
        "error_step_px": float(np.mean(steps)) if steps else float("nan"),
        "id_switches": switches,
        "ids_per_object": float(np.mean([len(s) for s in ids_per_object.values()])) if ids_per_object else float("nan"),
    }


# ----------------------------------------------------------------------------- runs
def track_all(detections: list[Detections], sizes: list[tuple[int, int]], conf: float, fps: float) -> dict[str, list]:
    """The same detections through ByteTrack with each smoother (ids are identical: smoothing does not feed back)."""
    out = {}
    for smooth in SMOOTHERS:
        tracker = Tracker(conf=conf, fps=fps, smooth=smooth)
        out[smooth] = [tracker.update(d, size) for d, size in zip(detections, sizes, strict=True)]
    return out


def run_clip(detector: Detector, video: Path, frames: int) -> dict:
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    dets, sizes = [], []
    for _ in tqdm(range(frames), desc="clip", unit="frame", leave=False):
        ok, frame = cap.read()
        if not ok:
            break
        dets.append(detect_for_tracking(detector, frame))
        sizes.append((frame.shape[1], frame.shape[0]))
    cap.release()
    result = {"frames": len(dets)}
    for smooth, per_frame in track_all(dets, sizes, detector.conf, fps).items():
        tracks = tracks_of(per_frame)
        lengths = [len(b) for b in tracks.values()]
        mean_length = float(np.mean(lengths)) if lengths else 0.0
        result[smooth] = {**jitter(tracks), "tracks": len(tracks), "mean_track_length": mean_length}
    return result


def run_known_motion(detector: Detector, kitti_dir: Path, scenes: int, frames: int, pan: float,
                     zoom: float) -> tuple[dict, dict]:
    labels = read_labels(kitti_dir)
    per_method: dict[str, list[dict]] = defaultdict(list)
    truth_jitter, example = [], {}
    for name in tqdm(pick_frames(kitti_dir, scenes), desc="pan/zoom scenes", unit="scene", leave=False):
        image = cv2.imread(str(kitti_dir / "images" / name))
        boxes = np.array([b for b, _ in labels[name]])
        seq = list(pan_zoom(image, boxes, frames, pan, zoom))
        dets = [detect_for_tracking(detector, f) for f, _, _ in seq]
        sizes = [(f.shape[1], f.shape[0]) for f, _, _ in seq]
        truth = [(b, v) for _, b, v in seq]
        truth_tracks = {k: {f: b[k] for f, (b, v) in enumerate(truth) if v[k]} for k in range(len(boxes))}
        truth_jitter.append(jitter(truth_tracks))
        for smooth, per_frame in track_all(dets, sizes, detector.conf, 25.0).items():
            per_method[smooth].append({**jitter(tracks_of(per_frame)), **against_truth(per_frame, truth)})
            if not example or example["scene"] == name:
                example.update(scene=name, truth=truth_tracks, **{smooth: per_frame})
    summary = {"scenes": scenes, "frames_per_scene": frames, "pan_px": pan, "zoom": zoom,
               "truth": {k: float(np.nanmean([j[k] for j in truth_jitter])) for k in ("one_minus_iou", "centre_accel_px",
                                                                                   "centre_accel_pct")}}
    for smooth, rows in per_method.items():
        summary[smooth] = {k: int(sum(r[k] for r in rows)) if k in ("id_switches", "pairs")
                           else float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
    return summary, example


def plot_example(example: dict, path: Path) -> None:
    """Centre x of the longest true object over time: truth, raw, Kalman, EMA."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = example["truth"]
    obj = max(truth, key=lambda k: len(truth[k]))
    frames = sorted(truth[obj])
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    ax.plot(frames, [(truth[obj][f][0] + truth[obj][f][2]) / 2 for f in frames], "k-", lw=2.5, label="truth")
    styles = {"none": ("tab:red", "raw (ByteTrack ids only)"), "kalman": ("tab:blue", "Kalman (default)"),
              "ema": ("tab:green", "EMA")}
    for smooth, (colour, label) in styles.items():
        # Follow the one track id matched to this object most often (not the nearest box each frame).
        votes: dict[int, int] = defaultdict(int)
        for f in frames:
            dets = example[smooth][f]
            if len(dets):
                iou = box_iou(truth[obj][f][None], dets.boxes.astype(np.float64))[0]
                if iou.max() >= MATCH_IOU:
                    votes[int(dets.track_ids[int(iou.argmax())])] += 1
        if not votes:
            continue
        tid = max(votes, key=votes.get)
        xs, ys = [], []
        for f in frames:
            dets = example[smooth][f]
            hit = np.flatnonzero(dets.track_ids == tid) if len(dets) else []
            if len(hit):
                b = dets.boxes[int(hit[0])]
                xs.append(f)
                ys.append((b[0] + b[2]) / 2)
        ax.plot(xs, ys, ".-", color=colour, lw=1.2, ms=4, label=f"{label}, track #{tid}")
    ax.set_xlabel("frame")
    ax.set_ylabel("box centre x (px)")
    ax.set_title(f"Known pan/zoom of KITTI {example['scene']}: one object's tracked box vs its true path")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def table(title: str, result: dict, columns: list[str], truth: dict | None = None) -> str:
    lines = [title, "", "| smoothing | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    rows = [("truth (floor)", truth)] if truth else []
    rows += [(s, result[s]) for s in SMOOTHERS]
    for name, r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "") if r else ""
            cells.append(f"{v:.4f}" if isinstance(v, float) and c == "one_minus_iou" else
                         f"{v:.2f}" if isinstance(v, float) else str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--video", type=Path, default=None, help="default: the bundled real highway clip")
    p.add_argument("--clip-frames", type=int, default=485)
    p.add_argument("--kitti", type=Path, default=SHARED / "kitti_tiny")
    p.add_argument("--scenes", type=int, default=6, help="kitti_tiny frames to pan across [6]")
    p.add_argument("--frames", type=int, default=80, help="frames per pan/zoom sequence [80]")
    p.add_argument("--pan", type=float, default=15.0, help="pan amplitude, px [15]")
    p.add_argument("--zoom", type=float, default=1.05, help="largest zoom [1.05]")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path)
    args = p.parse_args(argv)
    detector = Detector(args.model, conf=args.conf, threads=args.threads)
    print(f"model {args.model} ({detector.info['backend']}, conf {args.conf}, untrained={detector.info['untrained']})")
    clip = run_clip(detector, args.video or sample_video(), args.clip_frames)
    cols = ["one_minus_iou", "centre_accel_px", "centre_accel_pct", "pairs", "tracks", "mean_track_length"]
    print(table(f"Highway clip, {clip['frames']} frames (no ground truth)", clip, cols))
    results = {"model": str(args.model), "conf": args.conf, "clip": clip}
    if (args.kitti / "labels.csv").is_file():
        known, example = run_known_motion(detector, args.kitti, args.scenes, args.frames, args.pan, args.zoom)
        cols = ["one_minus_iou", "centre_accel_px", "centre_accel_pct", "error_step_px", "centre_error_px", "iou_with_truth",
                "recall", "id_switches", "ids_per_object"]
        print()
        print(table(f"Known pan/zoom motion (+-{args.pan:g} px, zoom up to {args.zoom:g}), {args.scenes} kitti_tiny "
                    f"scenes x {args.frames} frames", known, cols,
                    truth=known["truth"]))
        results["known_motion"] = known
        if args.plot:
            plot_example(example, args.plot)
            print(f"wrote {args.plot}")
    else:
        print(f"kitti_tiny not found at {args.kitti}: known-motion part skipped")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
