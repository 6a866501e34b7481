"""What can be measured of the GPU path without a GPU: kernel PTX through ptxas, and the host work it replaces.

    python bench/gpu_offline.py [--json bench/artifacts/gpu_offline.json] [--ptx-only]

1. compiles the numba-cuda kernels to PTX for sm_75 (Turing), sm_80 (Ampere) and sm_90 (Hopper), assembles them
   with ptxas: registers per thread, spills, shared memory, and the occupancy limit that follows;
2. times, on this CPU, what the device kernels take off the host: the njit decode + NMS of one
   6.3 kB output (real frames through the untrained reference network, and a worst case with every
   box a candidate), and the host normalisation of one 224x224 frame;
3. prints the paper comparison of device decode vs copying the output back (PCIe figures stated).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ARCHES = {"sm_75": (7, 5), "sm_80": (8, 0), "sm_90": (9, 0)}
# Per SM: 64k 32-bit registers, and at most 16 (sm_75) / 32 (sm_80, sm_90) resident blocks, 1024 / 2048 threads.
SM_LIMITS = {"sm_75": {"regs": 65536, "threads": 1024, "blocks": 16, "smem": 65536},
             "sm_80": {"regs": 65536, "threads": 2048, "blocks": 32, "smem": 167936},
             "sm_90": {"regs": 65536, "threads": 2048, "blocks": 32, "smem": 233472}}


def median_us(fn, repeat: int = 2000) -> float:
    fn()
    times = np.empty(repeat)
    for i in range(repeat):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return float(np.median(times) * 1e6)


def ptx_figures() -> dict:
    from fastyolo.kernels.cuda import NORMALIZE_THREADS, THREADS

    from fastyolo.gpu.ptx import assemble, compile_kernels_ptx

    threads = {"decode_nms_kernel": THREADS, "normalize_kernel": NORMALIZE_THREADS}
    out = {}
    for arch, cc in ARCHES.items():
        for name, ptx in compile_kernels_ptx(cc).items():
            row = {"ptx_lines": ptx.count("\n"), "barriers": ptx.count("bar.sync"),
                   "plain_float_multiplies": len(re.findall(
                       r"\b(?:mul(?:\.(?:ftz|sat))*\.f(?:16|32|64)|fma\.[\w.]*|mad\.(?:rn\.)?f\w*)\b", ptx))}
            if shutil.which("ptxas"):
                row.update(assemble(ptx, arch))
                limits = SM_LIMITS[arch]
                per_block = threads[name]
                by_regs = limits["regs"] // max(1, row["registers"] * per_block)
                by_smem = limits["smem"] // row["shared_bytes"] if row["shared_bytes"] else limits["blocks"]
                blocks = min(by_regs, by_smem, limits["blocks"], limits["threads"] // per_block)
                row["blocks_per_sm"] = int(blocks)
                row["occupancy"] = round(blocks * per_block / limits["threads"], 3)
            out[f"{name}@{arch}"] = row
    return out


def host_costs() -> dict:
    from fastyolo.kernels import decode_nms_batch, warmup

    from fastyolo.bench import VideoReader, sample_video
    from fastyolo.layout import CELL_SIZE, GRID, OUTPUT_SIZE
    from fastyolo.preprocess import normalize, resize_rgb

    warmup()
    reader = VideoReader(sample_video())
    frames = [reader.read() for _ in range(8)]
    reader.close()
    sizes = np.array([[frames[0].shape[1], frames[0].shape[0]]], np.float64)
    out: dict = {"output_bytes": OUTPUT_SIZE * 4}
    try:  # real frames through the untrained reference network (the cached ONNX; exported once if needed)
        from fastyolo.pipeline import CpuPipeline
        from fastyolo.reference_model import untrained_model

        pipe = CpuPipeline(untrained_model("resnet18", quiet=True), "onnxruntime", "fp32", 1)
        grids = pipe.infer(pipe.preprocess(frames))
        for conf in (0.25, 0.05):
            counts = [int(decode_nms_batch(grids[i : i + 1], sizes, conf, 0.45, 100)[3][0]) for i in range(len(frames))]
            out[f"njit_decode_real_conf{conf}_us"] = round(
                median_us(lambda c=conf: decode_nms_batch(grids[:1], sizes, c, 0.45, 100)), 2)
            out[f"kept_real_conf{conf}"] = counts
    except Exception as exc:  # no torch to export the reference network: the synthetic cases still run
        out["real_frames"] = f"skipped ({type(exc).__name__}: {exc})"
    worst = np.random.default_rng(0).random((1, GRID, GRID, CELL_SIZE), dtype=np.float32)
    worst_us = median_us(lambda: decode_nms_batch(worst, sizes, 0.0, 0.45, 100))
    out["njit_decode_worst_all_242_candidates_us"] = round(worst_us, 2)
    rgb = resize_rgb(frames[0])
    buf = np.empty((3, rgb.shape[0], rgb.shape[1]), np.float32)
    out["host_normalize_us"] = round(median_us(lambda: normalize(rgb, buf), 500), 2)
    out["host_resize_us"] = round(median_us(lambda: resize_rgb(frames[0]), 500), 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "artifacts" / "gpu_offline.json")
    parser.add_argument("--ptx-only", action="store_true", help="only the PTX/ptxas figures (no host timing)")
    args = parser.parse_args()
    try:
        import numba_cuda  # noqa: F401
    except ImportError:
        print("bench/gpu_offline.py: error: compiling PTX needs numba-cuda: pip install 'fastyolo[cuda]'", file=sys.stderr)
        return 2
    result = {"ptx": ptx_figures(), "host": {} if args.ptx_only else host_costs()}
    print(f"{'kernel@arch':<28}{'regs':>6}{'spills':>8}{'smem B':>8}{'blocks/SM':>11}{'occupancy':>11}")
    for key, row in result["ptx"].items():
        spills = row.get("spill_stores", 0) + row.get("spill_loads", 0)
        print(f"{key:<28}{row.get('registers', '-'):>6}{spills:>8}{row.get('shared_bytes', '-'):>8}"
              f"{row.get('blocks_per_sm', '-'):>11}{row.get('occupancy', '-'):>11}")
    print()
    for key, value in result["host"].items():
        print(f"{key:<44}{value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
