"""fastyolo export: a checkpoint (or untrained weights) to a self-describing ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastyolo.errors import MissingDependencyError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX (needs the [train] extra)")
    p.add_argument("checkpoint", nargs="?", type=Path, help="training checkpoint (.pt)")
    p.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--untrained", action="store_true", help="random weights, for timing only")
    p.add_argument("--backbone", default="resnet50", help="with --untrained: resnet18, resnet34 or resnet50")
    p.add_argument("--seed", type=int, default=0, help="with --untrained: weight seed [0]")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        import torch

        from fastyolo.train.checkpoint import load_model
        from fastyolo.train.export import export_onnx
        from fastyolo.train.model import YoloNet
    except ImportError:
        raise MissingDependencyError("exporting needs torch: pip install 'fastyolo[train]'") from None
    if args.untrained == (args.checkpoint is not None):
        raise SystemExit("fastyolo export: give either CHECKPOINT or --untrained")
    if args.untrained:
        torch.manual_seed(args.seed)
        model = YoloNet(args.backbone)
    else:
        model = load_model(args.checkpoint)
    diff = export_onnx(model, args.output, untrained=args.untrained)
    print(f"wrote {args.output} ({model.backbone_name}, fp32{', untrained' if args.untrained else ''}); "
          f"onnxruntime vs torch max abs diff {diff:.2e}")
    return 0
