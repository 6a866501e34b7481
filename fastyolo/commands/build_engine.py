"""fastyolo build-engine: a fastyolo ONNX to a TensorRT engine for this GPU (needs the [gpu] extra)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "build-engine", help="build a TensorRT engine (.plan) from an exported ONNX, on the GPU that will run it",
        description="Precision comes from the ONNX (export with --precision fp16 or int8); the engine runs only "
                    "with the TensorRT version and GPU architecture that built it (recorded in ENGINE.json).",
    )
    p.add_argument("onnx", type=Path, help="model exported by 'fastyolo export'")
    p.add_argument("-o", "--output", type=Path, required=True, help="engine file to write (.plan)")
    p.add_argument("--batch", type=int, default=8, help="largest batch the engine accepts (profile 1..BATCH) [8]")
    p.add_argument("--workspace", type=float, default=2.0, help="TensorRT builder workspace, GB [2]")
    return p


def run(args: argparse.Namespace) -> int:
    from fastyolo.gpu import build_engine

    info = build_engine(args.onnx, args.output, max_batch=args.batch, workspace_gb=args.workspace)
    print(f"wrote {args.output} ({info['precision']}, batch 1..{info['max_batch']}) for {info['gpu']} "
          f"(compute capability {info['compute_capability']}), TensorRT {info['tensorrt']}")
    return 0
