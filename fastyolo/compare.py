"""Several backend/precision/mode combinations timed back to back in one process, interleaved.

Each round runs every combination on the same frames; odd rounds go in reverse order, so slow
drift of a shared machine (other jobs, clocks, caches) hits every row alike. Rows are the pooled
rounds; ratios are to the baseline row, fp32 onnxruntime in latency mode (fastyolo.precisions).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastyolo import precisions
from fastyolo.bench import STAGES, BenchResult, run_bench
from fastyolo.detector import Detector

DEFAULT_COMBOS: tuple[tuple[str, str], ...] = precisions.cpu_combos()  # every CPU backend x precision
BASELINE = (*precisions.COMPARE_BASELINE, "latency")


@dataclass(frozen=True)
class Variant:
    """One pipeline to time: its models, where it normalises and whether decode overlaps inference.

    `fastyolo bench --compare --before-after` times two per backbone: "before" (the normalised-float
    export, host normalisation, every step in series: the pipeline before issue 13) and "after"
    (the uint8-input export, normalisation in the graph, decode + resize one frame ahead).
    """

    label: str
    fp32_model: str | os.PathLike
    int8_model: str | os.PathLike | None = None
    overlap: bool = True
    normalize: str = "auto"


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
    pipeline = Variant("", fp32_model, int8_model)
    return run_pipelines([pipeline], video, combos=combos, modes=modes, batch=batch, frames=frames, rounds=rounds,
                         warmup=warmup, threads=threads, conf=conf, iou=iou, progress=progress)


def run_pipelines(pipelines: Sequence[Variant], video: str | os.PathLike, *,
                  combos: Sequence[tuple[str, str]] = DEFAULT_COMBOS, modes: Sequence[str] = ("latency",),
                  batch: int = 4, frames: int = 100, rounds: int = 3, warmup: int = 5, threads: int | None = None,
                  conf: float = 0.25, iou: float = 0.45, progress: bool = True) -> list[BenchResult]:
    """Every (pipeline, combo, mode) row, interleaved over `rounds` rounds in one process; one pooled row each.

    A row's info carries "pipeline" (its label), so before/after rows of one run can be told apart.
    """
    if rounds < 1 or frames < 1:
        raise ValueError(f"rounds and frames must be at least 1, got rounds={rounds}, frames={frames}")
    detectors = {}
    for pipe in pipelines:
        for backend, precision in combos:
            model = pipe.int8_model if precision == "int8" else pipe.fp32_model
            if model is not None:
                detectors[pipe, backend, precision] = Detector(model, backend=backend, precision=precision,
                                                               threads=threads, conf=conf, iou=iou,
                                                               normalize=pipe.normalize)
    rows = [(key, mode) for key in detectors for mode in modes]
    runs: dict[tuple, list[BenchResult]] = {row: [] for row in rows}
    with tqdm(total=rounds * len(rows), desc="compare", unit="run", disable=not progress) as bar:
        for r in range(rounds):
            for key, mode in rows if r % 2 == 0 else rows[::-1]:
                b = 1 if mode == "latency" else batch
                runs[key, mode].append(run_bench(detectors[key], video, frames=frames, warmup=warmup,
                                                 progress=False, mode=mode, batch=b, overlap=key[0].overlap))
                bar.update()
    pooled = []
    for key, mode in rows:
        result = _pool(runs[key, mode])
        result.info = {**result.info, "pipeline": key[0].label}
        pooled.append(result)
    return pooled


def _pool(results: list[BenchResult]) -> BenchResult:
    first = results[-1]
    times = {s: np.concatenate([r.times_ms[s] for r in results]) for s in STAGES}
    return BenchResult(sum(r.frames for r in results), sum(r.seconds for r in results), first.info, times,
                       sum(r.detections for r in results), first.mode, first.batch, first.in_flight,
                       overlap=first.overlap)


def _baseline(results: list[BenchResult]) -> BenchResult:
    for r in results:  # the first matching row: with --before-after, the "before" pipeline's
        if (r.info["backend"], r.info["requested_precision"], r.mode) == BASELINE:
            return r
    return results[0]


def compare_json(results: list[BenchResult], rounds: int) -> dict:
    base = _baseline(results)
    rows = []
    for r in results:
        row = r.to_json()
        row["fps_ratio"] = round(r.fps / base.fps, 3)
        row["stage_ratio_p50"] = {  # baseline time / this time: above 1 is faster
            s: round(float(np.median(base.times_ms[s]) / max(np.median(r.times_ms[s]), 1e-9)), 3) for s in STAGES
        }
        row["pipeline"] = r.info.get("pipeline", "")
        row["network_p50_ms"] = round(r.p50("infer"), 3)
        row["frame_period_p50_ms"] = round(r.p50("period"), 3)
        rows.append(row)
    name = "/".join(BASELINE)  # "reference": the old key, kept for JSON readers
    return {"baseline": name, "reference": name, "rounds": rounds, "interleaved": True, "rows": rows}


def issue_table(results: list[BenchResult]) -> str:
    """Latency rows as issue 13's markdown table: FPS, network and frame p50, frame latency, share outside."""
    lines = [
        "| pipeline | FPS | network p50 ms | frame p50 ms | frame latency p50 ms | outside the network |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r.mode != "latency":
            continue
        i = r.info
        label = f"{i.get('backbone', '?')} {i['backend']} {i['precision']}"
        if i.get("pipeline"):
            label += f" ({i['pipeline']})"
        lines.append(f"| {label} | {r.fps:.1f} | {r.p50('infer'):.2f} | {r.p50('period'):.2f} | {r.p50('total'):.2f} "
                     f"| {100 * r.overhead_share():.0f}% |")
    lines.append("(frame p50: the critical path per frame, previous detections to these; frame latency: decode "
                 "start to detections; outside = 1 - network/frame)")
    return "\n".join(lines)


def _label(r: BenchResult) -> str:
    """backbone and pipeline label, e.g. 'resnet18 after'."""
    return f"{r.info.get('backbone', '?')} {r.info.get('pipeline', '')}".strip()


def compare_table(results: list[BenchResult], rounds: int) -> str:
    base = _baseline(results)
    cells = "  ".join(f"{s + ' p50/p90/p99':>22}" for s in STAGES)
    lines = [
        f"{rounds} interleaved rounds; ratios to the baseline {base.info['backend']} {base.info['precision']} "
        f"{base.mode} ({base.fps:.1f} FPS); ms per frame",
        f"{'pipeline':<16}{'backend':<12}{'precision':<10}{'mode':<11}{'batch':>5}{'FPS':>8}{'x FPS':>7}{'x infer':>8}"
        f"  {cells}",
    ]
    for r in results:
        infer_ratio = np.median(base.times_ms["infer"]) / max(np.median(r.times_ms["infer"]), 1e-9)
        p = r.percentiles()
        stage_cells = "  ".join(f"{p[s]['p50']:>8.2f}/{p[s]['p90']:.2f}/{p[s]['p99']:.2f}".rjust(22) for s in STAGES)
        lines.append(
            f"{_label(r):<16}{r.info['backend']:<12}{r.info['precision']:<10}{r.mode:<11}{r.batch:>5}{r.fps:>8.1f}"
            f"{r.fps / base.fps:>7.2f}{infer_ratio:>8.2f}  {stage_cells}"
        )
    model = Path(results[0].info["model"]).name if results else "?"
    lines.append(f"(model {model}; x = ratio to the baseline row, above 1 is faster; throughput rows overlap stages)")
    return "\n".join(lines)
