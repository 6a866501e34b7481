"""Several backend/precision/mode combinations timed back to back in one process, interleaved.

Each round runs every combination on the same frames; odd rounds go in reverse order, so slow
drift of a shared machine (other jobs, clocks, caches) hits every row alike. Rows are the pooled
rounds; ratios are to the fp32 onnxruntime latency row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastyolo.bench import STAGES, BenchResult, run_bench
from fastyolo.detector import Detector

DEFAULT_COMBOS: tuple[tuple[str, str], ...] = (
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("onnxruntime", "int8"),
    ("openvino", "int8"),
)
REFERENCE = ("onnxruntime", "fp32", "latency")


def run_compare(
    fp32_model: str | os.PathLike,
    int8_model: str | os.PathLike | None,
    video: str | os.PathLike,
    *,
    combos: Sequence[tuple[str, str]] = DEFAULT_COMBOS,
    modes: Sequence[str] = ("latency", "throughput"),
    batch: int = 4,
    frames: int = 100,
    rounds: int = 3,
    warmup: int = 5,
    threads: int | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    progress: bool = True,
) -> list[BenchResult]:
    """`rounds` rounds of `frames` frames per row; one pooled BenchResult per (combo, mode) row."""
    if rounds < 1 or frames < 1:
        raise ValueError(f"rounds and frames must be at least 1, got rounds={rounds}, frames={frames}")
    detectors = {}
    for backend, precision in combos:
        model = int8_model if precision == "int8" else fp32_model
        if model is not None:
            detectors[backend, precision] = Detector(model, backend=backend, precision=precision, threads=threads,
                                                     conf=conf, iou=iou)
    rows = [(combo, mode) for combo in detectors for mode in modes]
    runs: dict[tuple, list[BenchResult]] = {row: [] for row in rows}
    with tqdm(total=rounds * len(rows), desc="compare", unit="run", disable=not progress) as bar:
        for r in range(rounds):
            for combo, mode in rows if r % 2 == 0 else rows[::-1]:
                b = 1 if mode == "latency" else batch
                runs[combo, mode].append(run_bench(detectors[combo], video, frames=frames, warmup=warmup,
                                                   progress=False, mode=mode, batch=b))
                bar.update()
    return [_pool(runs[row]) for row in rows]


def _pool(results: list[BenchResult]) -> BenchResult:
    first = results[-1]
    times = {s: np.concatenate([r.times_ms[s] for r in results]) for s in STAGES}
    return BenchResult(sum(r.frames for r in results), sum(r.seconds for r in results), first.info, times,
                       sum(r.detections for r in results), first.mode, first.batch, first.in_flight)


def _reference(results: list[BenchResult]) -> BenchResult:
    for r in results:
        if (r.info["backend"], r.info["requested_precision"], r.mode) == REFERENCE:
            return r
    return results[0]


def compare_json(results: list[BenchResult], rounds: int) -> dict:
    ref = _reference(results)
    rows = []
    for r in results:
        row = r.to_json()
        row["fps_ratio"] = round(r.fps / ref.fps, 3)
        row["stage_ratio_p50"] = {  # reference time / this time: above 1 is faster
            s: round(float(np.median(ref.times_ms[s]) / max(np.median(r.times_ms[s]), 1e-9)), 3) for s in STAGES
        }
        rows.append(row)
    return {"reference": "/".join(REFERENCE), "rounds": rounds, "interleaved": True, "rows": rows}


def compare_table(results: list[BenchResult], rounds: int) -> str:
    ref = _reference(results)
    cells = "  ".join(f"{s + ' p50/p90/p99':>22}" for s in STAGES)
    lines = [
        f"{rounds} interleaved rounds; ratios to {ref.info['backend']} {ref.info['precision']} {ref.mode} "
        f"({ref.fps:.1f} FPS); ms per frame",
        f"{'backend':<12}{'precision':<10}{'mode':<11}{'batch':>5}{'FPS':>8}{'x FPS':>7}{'x infer':>8}  {cells}",
    ]
    for r in results:
        infer_ratio = np.median(ref.times_ms["infer"]) / max(np.median(r.times_ms["infer"]), 1e-9)
        p = r.percentiles()
        stage_cells = "  ".join(f"{p[s]['p50']:>8.2f}/{p[s]['p90']:.2f}/{p[s]['p99']:.2f}".rjust(22) for s in STAGES)
        lines.append(
            f"{r.info['backend']:<12}{r.info['precision']:<10}{r.mode:<11}{r.batch:>5}{r.fps:>8.1f}"
            f"{r.fps / ref.fps:>7.2f}{infer_ratio:>8.2f}  {stage_cells}"
        )
    model = Path(results[0].info["model"]).name if results else "?"
    lines.append(f"(model {model}; x = ratio to the reference row, above 1 is faster; throughput rows overlap stages)")
    return "\n".join(lines)
