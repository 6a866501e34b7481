"""fastyolo quantize MODEL.onnx --calib DIR: an int8 (Q/DQ) copy of an fp32 ONNX, without torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastyolo import cfg
from fastyolo.fileio import check_outputs
from fastyolo.quantize import CALIBRATION_METHODS, DEFAULT_FRAMES, DEFAULT_KEEP, DEFAULT_METHOD, KEEP_CHOICES


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("quantize", help="int8-quantise an exported fp32 ONNX, calibrated on real frames")
    p.add_argument("model", type=Path, help="fp32 ONNX from 'fastyolo export'")
    p.add_argument("--calib", type=Path, required=True, help="folder of real frames (or a video) to calibrate on")
    p.add_argument("-o", "--output", type=Path, help="int8 ONNX to write [MODEL.int8.onnx]")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=CALIBRATION_METHODS,
                   help=f"how activation ranges are chosen [{DEFAULT_METHOD}]")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                   help=f"calibration frames, spread evenly [{DEFAULT_FRAMES}]")
    p.add_argument("--keep-fp32", nargs="*", default=list(DEFAULT_KEEP), choices=KEEP_CHOICES, metavar="PART",
                   help=f"parts left in fp32 ({', '.join(KEEP_CHOICES)}); the flag alone quantises everything "
                   f"[{' '.join(DEFAULT_KEEP)}]")
    p.add_argument("--reduce-range", action="store_true",
                   help="7-bit weights: no 16-bit saturation on CPUs without VNNI (AVX2 only), less precision elsewhere "
                   "[off]")
    return p


def run(args: argparse.Namespace) -> int:
    from fastyolo.quantize import quantize_int8

    cfg.check_at_least("--frames", args.frames, 1)
    output = args.output or args.model.with_name(f"{args.model.stem}.int8.onnx")
    check_outputs([("-o", output)], [args.model, args.calib])  # before calibrating
    quantize_int8(args.model, output, args.calib, method=args.method, frames=args.frames, keep_fp32=args.keep_fp32,
                  reduce_range=args.reduce_range)
    print(f"wrote {output} (int8 Q/DQ, {args.method} calibration on {args.frames} frames of {args.calib}, "
          f"{7 if args.reduce_range else 8}-bit weights, fp32 parts: {', '.join(args.keep_fp32) or 'none'})")
    return 0
