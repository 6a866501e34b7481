"""fastyolo bench [VIDEO]: FPS and per-stage latency of the whole pipeline; --compare, --check."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastyolo import cfg
from fastyolo.errors import UsageError
from fastyolo.pipeline import NORMALIZE_CHOICES

MODE_CHOICES = ("latency", "throughput", "both")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="time the whole pipeline on a video (default: the bundled highway clip)",
        description="Time decode -> preprocess -> infer -> postprocess. --compare times several backend/precision "
        "combinations interleaved in one process; --check measures each precision's agreement with fp32.")
    p.add_argument("video", nargs="?", help="video file (default: bundled real highway clip, 960x540)")
    p.add_argument("--model", help=".onnx or .plan (default: the packaged trained model; 'untrained': the untrained "
                   "ResNet-50 reference, timing only)")
    cfg.add_runtime_options(p, precision_help="fp32; bf16 (OpenVINO, where the CPU has it; fp32 otherwise and it says "
                            "so); int8 (Q/DQ model: --int8-model, MODEL.int8.onnx beside --model, or quantised once "
                            "into the cache)")
    p.add_argument("--mode", default="latency", choices=MODE_CHOICES,
                   help="latency: batch 1, one frame in flight; throughput: decode thread, --batch, async requests; "
                   "both [latency]")
    p.add_argument("--sequential", action="store_true",
                   help="latency mode in series on one thread (no decode + resize of the next frame during inference)")
    p.add_argument("--normalize", default="auto", choices=NORMALIZE_CHOICES,
                   help="where the ImageNet normalisation runs: host (numpy), graph (a uint8-input export), ppp "
                   "(OpenVINO's PrePostProcessor on a normalised-float export); auto: what the model takes [auto]")
    p.add_argument("--batch", type=int, default=4, help="frames per inference call in throughput mode [4]")
    p.add_argument("--in-flight", type=int, default=None,
                   help="inference requests in flight in throughput mode [OpenVINO's optimum; 1 for onnxruntime]")
    p.add_argument("--frames", type=int, default=300, help="timed frames (the clip loops) [300]")
    p.add_argument("--warmup", type=int, default=10, help="untimed frames first [10]")
    p.add_argument("--int8-model", type=Path, help="int8 ONNX to use for int8 rows (from 'fastyolo quantize')")
    p.add_argument("--calib", type=Path,
                   help="frames (folder or video) to quantise --model on when no int8 model exists [bundled clip]")
    p.add_argument("--compare", action="store_true",
                   help="time onnxruntime/OpenVINO x fp32/bf16/int8 interleaved and print one table with ratios")
    p.add_argument("--combos", default=None,
                   help="with --compare: comma-separated backend:precision list [all five CPU combinations]")
    p.add_argument("--rounds", type=int, default=3, help="with --compare: interleaved rounds [3]")
    p.add_argument("--before-after", action="store_true",
                   help="with --compare: each row twice, 'before' (normalised-float model, host normalisation, in "
                   "series) and 'after' (uint8-input model, normalisation in the graph, decode overlapped)")
    p.add_argument("--backbones", default=None,
                   help="with --compare: untrained reference networks to time beside the model, comma-separated "
                   "(e.g. resnet18,resnet50); with --before-after (and no --model) instead of it [resnet50]")
    p.add_argument("--check", action="store_true",
                   help="mAP@0.5 of each precision's detections with the fp32 detections as ground truth")
    p.add_argument("--data", type=Path,
                   help="with --check: real frames (folder of images or a video) [the bundled clip]")
    p.add_argument("--check-frames", type=int, default=100, help="with --check: frames, spread evenly [100]")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    return p


def _combos(text: str | None) -> tuple[tuple[str, str], ...]:
    """--combos: backend:precision items, each one a CPU runtime runs (fastyolo.precisions.cpu_combos)."""
    from fastyolo.precisions import cpu_combos

    if not text:
        return cpu_combos()
    combos = []
    for item in text.split(","):
        backend, _, precision = item.strip().partition(":")
        if (backend, precision) not in cpu_combos():
            raise UsageError(f"--combos item {item!r}: write backend:precision, one of "
                                f"{', '.join(':'.join(c) for c in cpu_combos())}")
        combos.append((backend, precision))
    return tuple(combos)


def _check_args(args: argparse.Namespace) -> None:
    """Every option and the --json path, before a model is exported, quantised or timed."""
    from fastyolo.fileio import check_outputs

    for name in ("frames", "batch", "rounds", "check_frames"):
        cfg.check_at_least(f"--{name.replace('_', '-')}", getattr(args, name), 1)
    cfg.check_at_least("--in-flight", args.in_flight, 1, optional=True)
    cfg.check_at_least("--warmup", args.warmup, 0)
    _combos(args.combos)  # before any model is exported or quantised
    cfg.check_runtime_args(args, args.model)
    inputs = [args.model, args.video, args.int8_model, args.calib, args.data]
    if args.model:  # the int8 sibling bench may pick up
        inputs.append(Path(args.model).with_name(f"{Path(args.model).stem}.int8.onnx"))
    check_outputs([("--json", args.json)], inputs)
    if (args.before_after or args.backbones) and not args.compare:
        raise UsageError("--before-after and --backbones go with --compare")
    if args.backbones and args.before_after and args.model:
        raise UsageError("--before-after --backbones times the untrained reference networks: leave out --model")
    if not args.tiles.off and (args.compare or args.check or args.mode != "latency"):
        raise UsageError(f"--tiles {args.tiles} times latency mode (the tiles of a frame are one batch): leave out "
                         "--compare, --check and --mode throughput/both")


def _variants(args: argparse.Namespace, model: Path, needs_int8: bool, int8_model) -> list:
    """The pipelines --compare times: one (the model as given), or before/after per backbone."""
    from fastyolo.compare import Variant
    from fastyolo.input_format import NORMALIZED, UINT8, uint8_model_for
    from fastyolo.model_file import read_onnx
    from fastyolo.quantize import int8_model_for
    from fastyolo.reference_model import untrained_model

    if not args.before_after:  # the model, and beside it the untrained reference networks of --backbones
        label = f"{'untrained' if read_onnx(model).untrained else 'trained'} {read_onnx(model).backbone}"
        main = [Variant(label if args.backbones else "", model, int8_model() if needs_int8 else None,
                        overlap=not args.sequential, normalize=args.normalize)]
        names = [b.strip() for b in (args.backbones or "").split(",") if b.strip()]
        for name in names:
            u = untrained_model(name, input_format=UINT8)
            main.append(Variant(f"untrained {name}", u, int8_model_for(u, args.calib) if needs_int8 else None,
                                overlap=not args.sequential, normalize=args.normalize))
        return main
    references = not args.model  # the untrained reference networks, before and after exports of each
    if references:
        names = (args.backbones or "resnet50").split(",")
        bases = [untrained_model(b.strip(), input_format=NORMALIZED) for b in names if b.strip()]
    else:
        bases = [model]
    variants = []
    for base in bases:
        if read_onnx(base).input_format != NORMALIZED:
            raise UsageError(f"--before-after needs the normalised-float export as --model ({base.name} takes "
                             f"{read_onnx(base).input_format}): 'fastyolo export ... --input normalized'")
        after = untrained_model(read_onnx(base).backbone, input_format=UINT8) if references else uint8_model_for(base)
        if args.before_after:
            before_int8 = (args.int8_model or int8_model_for(base, args.calib)) if needs_int8 else None
            variants.append(Variant("before", base, before_int8, overlap=False, normalize="host"))
        variants.append(Variant("after" if args.before_after else "", after,
                                int8_model_for(after, args.calib) if needs_int8 else None,
                                overlap=not args.sequential, normalize=args.normalize))
    return variants


def _compare(args: argparse.Namespace, model: Path, video, int8_model) -> dict:
    """--compare: the rows, interleaved; prints the tables and returns the JSON."""
    from fastyolo.compare import compare_json, compare_table, issue_table, run_pipelines

    modes = ("latency", "throughput") if args.mode == "both" else (args.mode,)
    combos = _combos(args.combos)
    variants = _variants(args, model, any(p == "int8" for _, p in combos), int8_model)
    results = run_pipelines(variants, video, combos=combos, modes=modes, batch=args.batch, frames=args.frames,
                            rounds=args.rounds, warmup=args.warmup, threads=args.threads, conf=args.conf,
                            iou=args.iou)
    print(f"video      {video}")
    print(compare_table(results, args.rounds))
    if "latency" in modes:
        print()
        print(issue_table(results))
    return compare_json(results, args.rounds)


def _write_json(path: Path | None, data: dict) -> None:
    from fastyolo.fileio import write_text

    if path:
        write_text(path, json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}")


def run(args: argparse.Namespace) -> int:
    from fastyolo.errors import FastYoloError

    try:
        return _run(args)
    except ValueError as exc:  # a bad combination of options (e.g. bf16 on onnxruntime): one line, no traceback
        if isinstance(exc, FastYoloError):
            raise
        raise FastYoloError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    from fastyolo.bench import run_bench
    from fastyolo.detector import Detector
    from fastyolo.fileio import sample_video
    from fastyolo.input_format import NORMALIZED, UINT8
    from fastyolo.reference_model import untrained_model

    _check_args(args)
    # The default reference network is the current pipeline's: normalisation in the graph (uint8 input).
    # (host/ppp normalisation need the normalised-float export.)
    reference = NORMALIZED if args.normalize in ("host", "ppp") else UINT8
    if args.model == "untrained" or (args.model is None and reference == NORMALIZED):
        model = untrained_model(input_format=reference)  # host/ppp normalisation need a normalised-float model
    elif args.model is None:
        from fastyolo.shipped import shipped_model

        model = shipped_model()  # the packaged trained network (its int8 twin sits beside it)
    else:
        model = Path(args.model)
    video = args.video or sample_video()
    is_onnx = model.suffix.lower() == ".onnx"

    def int8_model() -> Path:
        from fastyolo.quantize import int8_model_for

        return args.int8_model or int8_model_for(model, args.calib)

    if args.check or args.compare:
        if not is_onnx:
            raise UsageError("--check and --compare time the CPU runtimes: give an fp32 .onnx as --model")
        from fastyolo.model_file import read_onnx

        if read_onnx(model).precision != "fp32":
            raise UsageError("--check and --compare need the fp32 model as --model (the int8 one "
                             "goes in --int8-model)")
    output: dict = {}
    if args.check:
        from fastyolo.agreement import check_precisions, check_table
        from fastyolo.quantize import calibration_frames

        data = args.data or sample_video()
        frames = calibration_frames(data, args.check_frames)
        rows = check_precisions(model, int8_model(), frames, threads=args.threads, conf=args.conf, iou=args.iou)
        print(check_table(rows, len(frames), str(data)))
        from fastyolo.agreement import BASELINE

        baseline = "/".join(BASELINE)  # "reference": its old key, kept for JSON readers
        output["check"] = {"data": str(data), "frames": len(frames), "baseline": baseline, "reference": baseline,
                           "rows": rows}
    if args.compare:
        output["compare"] = _compare(args, model, video, int8_model)
    if args.check or args.compare:
        _write_json(args.json, output)
        return 0

    if args.precision == "int8" and is_onnx:
        model = int8_model()
    detector = Detector(model, backend=args.backend, precision=args.precision, threads=args.threads,
                        conf=args.conf, iou=args.iou, normalize=args.normalize, tiles=args.tiles)
    modes = ("latency", "throughput") if args.mode == "both" else (args.mode,)
    runs = []
    print(f"video      {video}")
    for n, mode in enumerate(modes):
        if n:
            print()
        result = run_bench(detector, video, frames=args.frames, warmup=args.warmup, mode=mode,
                           batch=1 if mode == "latency" else args.batch, in_flight=args.in_flight,
                           overlap=not args.sequential)
        print(result.table())
        runs.append(result.to_json())
    # The first run's keys stay at the top level (the format `bench` always wrote); every run is in "runs".
    _write_json(args.json, {**runs[0], "runs": runs})
    return 0
