"""fastyolo export: a checkpoint (or untrained weights) to a self-describing ONNX."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fastyolo.commands.train import BACKBONES, HEADS
from fastyolo.errors import MissingDependencyError, UsageError
from fastyolo.fileio import check_outputs
from fastyolo.input_format import NORMALIZED, UINT8
from fastyolo.precisions import exportable, get


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX (needs the [train] extra)")
    p.add_argument("checkpoint", nargs="?", type=Path, help="training checkpoint (.pt)")
    p.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--untrained", action="store_true", help="random weights, for timing only")
    p.add_argument("--backbone", default="resnet50", choices=BACKBONES, help="with --untrained: the network [resnet50]")
    p.add_argument("--head", default="conv", choices=HEADS, help="with --untrained: the head [conv]")
    p.add_argument("--seed", type=int, default=0, help="with --untrained: weight seed [0]")
    p.add_argument("--precision", default="fp32", choices=exportable(),
                   help="; ".join(f"{name}: {get(name).holds}" for name in exportable()) + " [fp32]")
    p.add_argument("--calib", type=Path, help="with --precision int8: folder of real frames to calibrate on")
    p.add_argument("--input", default="uint8", choices=("uint8", "normalized"),
                   help="uint8: the model takes resized uint8 BGR pixels and normalises in its graph (ImageNet "
                   "mean/std folded into the first conv), the host only resizes; normalized: (N,3,224,224) "
                   "normalised floats, as models exported before [uint8]")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        import torch

        from fastyolo.train.checkpoint import load_model
        from fastyolo.train.model import YoloNet
    except ImportError:
        raise MissingDependencyError("exporting needs torch: pip install 'fastyolo[train]'") from None
    if args.untrained == (args.checkpoint is not None):
        raise UsageError("give either CHECKPOINT or --untrained")
    precision = get(args.precision)
    if precision.needs_calib and args.calib is None:
        raise UsageError(f"--precision {precision.name} needs --calib DIR (a folder of real frames)")
    # Lower precisions are made from an fp32 export: it goes to a temporary file beside the output
    # (no side file left behind, no NAME.fp32.onnx of the user's replaced).
    check_outputs([("-o", args.output)], [args.checkpoint, args.calib])
    if args.untrained:
        torch.manual_seed(args.seed)
        model = YoloNet(args.backbone, head=args.head)
    else:
        model = load_model(args.checkpoint)
    fmt = UINT8 if args.input == "uint8" else NORMALIZED
    if args.precision == "fp32":
        _export_fp32(model, args.output, args.untrained, fmt)
        return 0
    # Lower precisions are rewrites of the verified fp32 graph, so the precision lives in the ONNX
    # itself (TensorRT 11 has no FP16/INT8 builder flags).
    with tempfile.TemporaryDirectory(prefix=".fastyolo-export-", dir=args.output.parent) as tmp:
        fp32_path = _export_fp32(model, Path(tmp) / f"{args.output.stem}.fp32.onnx", args.untrained, fmt, final=False)
        convert = precision.convert()  # the table's converter: fastyolo.fp16.convert_fp16, fastyolo.quantize.quantize_int8
        convert(fp32_path, args.output, *([args.calib] if precision.needs_calib else []))
    print(f"wrote {args.output} ({args.precision})")
    return 0


def _export_fp32(model, path: Path, untrained: bool, input_format: str, *, final: bool = True) -> Path:
    from fastyolo.fileio import file_mode
    from fastyolo.train.export import export_onnx

    diff = export_onnx(model, path, untrained=untrained, input_format=input_format)
    path.chmod(file_mode())  # the umask's mode, not the temporary file's 0600
    print(f"{'wrote' if final else 'exported'} {path if final else 'fp32'} "
          f"({model.backbone_name}, fp32, input {input_format}{', untrained' if untrained else ''}); "
          f"onnxruntime vs torch max abs diff {diff:.2e}")
    return path
