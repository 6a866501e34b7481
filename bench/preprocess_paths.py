"""Which normalisation path is fastest, per backend and precision (issue 13): host, graph or OpenVINO's PPP.

    python bench/preprocess_paths.py --backbone resnet18 --rounds 5 --frames 200 --threads 2 --json out.json

Paths, each timed as host preprocess + network on the same decoded real frames (decode excluded:
it is the same for all three and overlapped in latency mode anyway):

- host:  the normalised-float export; the host resizes, swaps BGR -> RGB, transposes, normalises.
- graph: the uint8-input export (fastyolo.input_format); the host only resizes, the graph casts,
         transposes, subtracts the mean and runs the first conv with 1/std folded into it.
- ppp:   the normalised-float export behind OpenVINO's PrePostProcessor (OpenVINO only); the host
         only resizes.

Before timing, each path's output grid is compared with the host path's on the same frames (max
abs diff, printed): a faster path that computes something else is worthless. Paths are interleaved
per round (odd rounds reversed), as `fastyolo bench --compare` does. The default
(`normalize="auto"`, graph for a uint8 export) is confirmed when, for every backend/precision row,
graph's preprocess + infer p50 is at or below host's (and ppp's, on OpenVINO) by more than the
round-to-round spread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fastyolo import Detector
from fastyolo.fileio import sample_frames, sample_video, write_text
from fastyolo.input_format import NORMALIZED, uint8_model_for
from fastyolo.model_file import read_onnx
from fastyolo.quantize import int8_model_for

PATHS = ("host", "graph", "ppp")
COMBOS = (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("onnxruntime", "int8"),
          ("openvino", "int8"))


def detectors(model: Path, backend: str, precision: str, threads: int | None) -> dict[str, Detector]:
    """The paths this backend/precision can run, each a Detector on the right model."""
    base = int8_model_for(model) if precision == "int8" else model
    folded = uint8_model_for(model)
    folded = int8_model_for(folded) if precision == "int8" else folded
    made = {"host": Detector(base, backend=backend, precision=precision, threads=threads, normalize="host"),
            "graph": Detector(folded, backend=backend, precision=precision, threads=threads, normalize="graph")}
    if backend == "openvino":
        made["ppp"] = Detector(base, backend=backend, precision=precision, threads=threads, normalize="ppp")
    return made


def time_path(detector: Detector, frames: list[np.ndarray]) -> np.ndarray:
    """(2, frames) ms: host preprocess, network; one frame per call (latency mode)."""
    pipe, clock = detector.pipeline, time.perf_counter
    out = np.zeros((2, len(frames)))
    for n, frame in enumerate(frames):
        t0 = clock()
        images = pipe.preprocess([frame])
        t1 = clock()
        pipe.infer(images)
        out[:, n] = (t1 - t0, clock() - t1)
    return out * 1000.0


def run(model: Path, frames: list[np.ndarray], rounds: int, threads: int | None) -> list[dict]:
    rows = []
    for backend, precision in COMBOS:
        made = detectors(model, backend, precision, threads)
        reference = made["host"].raw_outputs(frames[:16])
        agreement = {p: float(np.abs(d.raw_outputs(frames[:16]) - reference).max()) for p, d in made.items()}
        for d in made.values():  # warm-up: first calls compile and allocate
            time_path(d, frames[:5])
        times: dict[str, list[np.ndarray]] = {p: [] for p in made}
        order = list(made)
        for r in range(rounds):
            for path in order if r % 2 == 0 else order[::-1]:
                times[path].append(time_path(made[path], frames))
        for path in made:
            t = np.concatenate(times[path], axis=1)
            per_round = [float(np.median(x[0] + x[1])) for x in times[path]]
            rows.append({
                "backend": backend, "precision": precision, "ran": made[path].info["precision"], "path": path,
                "preprocess_p50_ms": round(float(np.median(t[0])), 4),
                "infer_p50_ms": round(float(np.median(t[1])), 4),
                "sum_p50_ms": round(float(np.median(t[0] + t[1])), 4),
                "round_spread_ms": round(max(per_round) - min(per_round), 4),
                "grid_max_abs_diff_vs_host": agreement[path],
            })
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'backend':<12}{'precision':<10}{'ran':<6}{'path':<7}{'prep p50':>10}{'infer p50':>11}{'sum p50':>10}"
             f"{'spread':>9}{'grid |d| vs host':>18}"]
    for r in rows:
        lines.append(f"{r['backend']:<12}{r['precision']:<10}{r['ran']:<6}{r['path']:<7}{r['preprocess_p50_ms']:>10.3f}"
                     f"{r['infer_p50_ms']:>11.3f}{r['sum_p50_ms']:>10.3f}{r['round_spread_ms']:>9.3f}"
                     f"{r['grid_max_abs_diff_vs_host']:>18.2e}")
    lines.append("(ms per frame, batch 1; spread: max - min of the per-round medians of the sum)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="normalised-float fp32 export [the untrained reference of --backbone]")
    p.add_argument("--backbone", default="resnet18", help="without --model: resnet18 or resnet50 [resnet18]")
    p.add_argument("--frames", type=int, default=200, help="real frames of the bundled clip per round [200]")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds [5]")
    p.add_argument("--threads", type=int, default=None, help="CPU threads [all cores]")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)
    if args.model is None:
        from fastyolo.reference_model import untrained_model

        args.model = untrained_model(args.backbone, input_format=NORMALIZED)
    if read_onnx(args.model).input_format != NORMALIZED:
        p.error(f"{args.model} takes uint8 input already: give the normalised-float export (--input normalized)")
    frames = sample_frames(sample_video(), args.frames)
    rows = run(args.model, frames, args.rounds, args.threads)
    print(table(rows))
    if args.json:
        write_text(args.json, json.dumps({"model": str(args.model), "frames": len(frames), "rounds": args.rounds,
                                          "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
