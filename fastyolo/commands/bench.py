"""fastyolo bench [VIDEO]: FPS and per-stage latency of the whole pipeline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastyolo.backends import BACKENDS, PRECISIONS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="time the whole pipeline on a video (default: the bundled highway clip)")
    p.add_argument("video", nargs="?", help="video file (default: bundled real highway clip, 960x540)")
    p.add_argument("--model", help=".onnx or .plan (default: untrained ResNet-50 reference, timing only)")
    p.add_argument("--backend", default="auto", choices=("auto", *BACKENDS, "tensorrt"))
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--frames", type=int, default=300, help="timed frames (the clip loops) [300]")
    p.add_argument("--warmup", type=int, default=10, help="untimed frames first [10]")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every library [all cores]")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.45)
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    return p


def run(args: argparse.Namespace) -> int:
    from fastyolo.bench import run_bench, sample_video
    from fastyolo.detector import Detector
    from fastyolo.reference_model import untrained_model

    model = args.model or untrained_model()
    video = args.video or sample_video()
    detector = Detector(model, backend=args.backend, precision=args.precision, threads=args.threads,
                        conf=args.conf, iou=args.iou)
    result = run_bench(detector, video, frames=args.frames, warmup=args.warmup)
    print(f"video      {video}")
    print(result.table())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
