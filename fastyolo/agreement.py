"""How far each lower precision moves the detections: mAP@0.5 against the fp32 detections as ground truth.

The baseline, fp32 on OpenVINO (fastyolo.precisions.CHECK_BASELINE), gives the boxes taken as
truth (at the usual confidence threshold). Every other backend/precision detects down to a low
threshold, as a normal mAP evaluation does, so a box whose score merely crossed the threshold
still counts when it is found; rank and position are what is scored. fp32 against itself scores
exactly 1.0. Targets and rows come from the table in fastyolo.precisions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastyolo import precisions
from fastyolo.detections import Detections
from fastyolo.detector import Detector

BASELINE = precisions.CHECK_BASELINE
# Every CPU (backend, precision) but the baseline itself.
CHECKED: tuple[tuple[str, str], ...] = tuple(c for c in precisions.cpu_combos() if c != BASELINE)
TARGETS = precisions.targets()  # the issue's targets (fp32 0.99: two runtimes should agree)
PREDICTION_CONF = 0.01


def _detect_all(detector: Detector, frames: Sequence[np.ndarray], desc: str, progress: bool
                ) -> tuple[list[Detections], np.ndarray]:
    """Detections and raw output grids of every frame, one frame per call (latency path), one inference each."""
    found, grids = [], []
    for frame in tqdm(frames, desc=desc, unit="frame", disable=not progress, leave=False):
        grid = detector.raw_outputs([frame])
        found.append(detector.decode(grid, [(frame.shape[1], frame.shape[0])])[0])
        grids.append(grid)
    return found, np.concatenate(grids)


def check_precisions(
    fp32_model: str | os.PathLike,
    int8_model: str | os.PathLike | None,
    frames: Sequence[np.ndarray],
    *,
    combos: Sequence[tuple[str, str]] = CHECKED,
    threads: int | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    progress: bool = True,
) -> list[dict]:
    """One row per (backend, precision): mAP@0.5 of its detections with the fp32 ones as truth.

    Rows: backend, precision (requested), ran (what the runtime reports), map50 (and the stricter
    COCO map50_95: boxes must also sit where fp32 put them), target (for map50), passed,
    baseline_boxes (and its old name reference_boxes), detections, grid_max_abs_diff,
    grid_mean_abs_diff (raw outputs vs the baseline's).
    """
    from fastyolo.metrics import evaluate

    if not frames:
        raise ValueError("check_precisions needs at least one frame")
    baseline = Detector(fp32_model, backend=BASELINE[0], precision=BASELINE[1], threads=threads, conf=conf, iou=iou)
    truth_dets, truth_grids = _detect_all(baseline, frames, "fp32 baseline", progress)
    truths = [(d.boxes, d.class_ids) for d in truth_dets]
    baseline_boxes = int(sum(len(d) for d in truth_dets))
    rows = []
    for backend, precision in combos:
        model = int8_model if precision == "int8" else fp32_model
        if model is None:
            continue
        detector = Detector(model, backend=backend, precision=precision, threads=threads,
                            conf=min(PREDICTION_CONF, conf), iou=iou)
        found, grids = _detect_all(detector, frames, f"{backend} {precision}", progress)
        result = evaluate(found, truths)
        diff = np.abs(grids - truth_grids)
        map50 = result["map50"]
        rows.append({
            "backend": backend,
            "precision": precision,
            "ran": detector.info["precision"],
            "model": str(Path(model)),
            "map50": None if map50 is None else round(float(map50), 4),
            "map50_95": None if result.get("map50_95") is None else round(float(result["map50_95"]), 4),
            "target": TARGETS[precision],
            "passed": None if map50 is None else bool(map50 >= TARGETS[precision]),
            "baseline_boxes": baseline_boxes,
            "reference_boxes": baseline_boxes,  # the old name of baseline_boxes, kept for JSON readers
            "detections": int(sum(int((d.scores >= conf).sum()) for d in found)),
            "grid_max_abs_diff": round(float(diff.max()), 5),
            "grid_mean_abs_diff": round(float(diff.mean()), 6),
        })
    return rows


def check_table(rows: list[dict], frames: int, source: str) -> str:
    lines = [
        f"agreement with the baseline's detections ({BASELINE[1]} on {BASELINE[0]}) as ground truth, "
        f"{frames} frames of {source}",
        f"{'backend':<13}{'precision':<11}{'ran':<6}{'mAP@0.5':>9}{'target':>8}  {'pass':<5}{'mAP@.5:.95':>11}"
        f"{'base boxes':>11}{'boxes':>7}{'grid max|d|':>13}{'mean|d|':>10}",
    ]
    for r in rows:
        m = "n/a" if r["map50"] is None else f"{r['map50']:.4f}"
        ok = "n/a" if r["passed"] is None else ("yes" if r["passed"] else "NO")
        strict = "n/a" if r["map50_95"] is None else f"{r['map50_95']:.4f}"
        lines.append(
            f"{r['backend']:<13}{r['precision']:<11}{r['ran']:<6}{m:>9}{r['target']:>8.2f}  {ok:<5}{strict:>11}"
            f"{r['baseline_boxes']:>11}{r['detections']:>7}{r['grid_max_abs_diff']:>13.5f}{r['grid_mean_abs_diff']:>10.6f}"
        )
    lines.append(f"(base boxes: the baseline's detections; boxes: detections at its threshold; mAP counts "
                 f"detections down to {PREDICTION_CONF}; no baseline box at all gives n/a: lower --conf)")
    return "\n".join(lines)
