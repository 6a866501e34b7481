"""fastyolo eval MODEL --data DIR: VOC mAP@0.5 and COCO mAP@[.5:.95] of a model on labelled frames."""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastyolo import cfg
from fastyolo.datasets import Sample
from fastyolo.detections import Detections
from fastyolo.errors import DatasetError, MissingDependencyError, ModelError
from fastyolo.fileio import check_outputs, write_text
from fastyolo.layout import INPUT_SIZE

EVAL_CONF = cfg.MAP_CONF  # low: the mAP integrates precision over every score threshold
EVAL_TOP_K = cfg.TOP_K  # COCO counts at most 100 detections per frame


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="mAP of a model on labelled frames (crowdAI/Autti labels.csv or KITTI label_2/)")
    p.add_argument("model", type=Path, help=".onnx or .plan as Detector loads it, or a training checkpoint .pt")
    p.add_argument("--data", type=Path, required=True, help="dataset folder (images/ or images beside labels.csv)")
    p.add_argument("--labels", type=Path, help="labels file or KITTI label folder [DATA/labels.csv, else DATA/label_2]")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    p.add_argument("--plot", type=Path, help="draw precision-recall curves (IoU 0.5) into this PNG")
    p.add_argument("--min-size", type=float, default=0.0,
                   help=f"ignore boxes under this many pixels on a side at the {INPUT_SIZE}x{INPUT_SIZE} network input "
                        "(VOC 'difficult') [0]")
    cfg.add_runtime_options(p, conf=EVAL_CONF)
    p.add_argument("--batch", type=int, default=8, help="frames per network call [8]")
    p.add_argument("--skip-malformed", action="store_true", help="skip (and count) malformed label rows instead of failing")
    return p


def checkpoint_to_onnx(checkpoint: Path, directory: Path) -> Path:
    """Export a training checkpoint to an ONNX in `directory` (needs torch)."""
    try:
        from fastyolo.train.checkpoint import load_model
        from fastyolo.train.export import export_onnx
    except ImportError:
        raise MissingDependencyError(
            f"{checkpoint.name} is a training checkpoint: evaluating it needs torch to export it "
            "(pip install 'fastyolo[train]'), or export it elsewhere with `fastyolo export` and pass the .onnx"
        ) from None
    path = directory / f"{checkpoint.stem}.onnx"
    export_onnx(load_model(checkpoint), path, untrained=False)
    return path


def _prefetch(samples: Sequence[Sample], ahead: int) -> Iterator[np.ndarray]:
    """Decode frames on two threads (cv2 releases the GIL), at most `ahead` in flight."""
    with ThreadPoolExecutor(2) as pool:
        pending: deque = deque()
        for sample in samples:
            pending.append(pool.submit(sample.load_image))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def detect_samples(detector, samples: Sequence[Sample], batch: int = 8, progress: bool = True) -> list[Detections]:
    """Run the detector over every sample's frame, `batch` frames per call, with a progress bar."""
    out: list[Detections] = []
    frames: list[np.ndarray] = []
    with tqdm(total=len(samples), unit="frame", desc="eval", disable=not progress) as bar:
        for frame in _prefetch(samples, 2 * batch):
            frames.append(frame)
            if len(frames) == batch:
                out += detector.detect_batch(frames)
                bar.update(len(frames))
                frames = []
        if frames:
            out += detector.detect_batch(frames)
            bar.update(len(frames))
    return out


def _check(args: argparse.Namespace) -> None:
    """Options and output paths, before the dataset is read or a frame is evaluated."""
    model = args.model if args.model.suffix.lower() != ".pt" else None  # a checkpoint runs as an exported .onnx
    cfg.check_runtime_args(args, model)
    cfg.check_at_least("--batch", args.batch, 1)
    cfg.check_at_least("--min-size", args.min_size, 0)
    inputs = [args.model, args.labels, *_dataset_files(args.data)]
    check_outputs([("--json", args.json), ("--plot", args.plot)], inputs)


def _dataset_files(data: Path) -> list[Path]:
    """The files of a dataset folder that an output must not replace: labels files, KITTI labels, images."""
    if not data.is_dir():
        return [data]
    files = [p for p in data.glob("*") if p.is_file()]
    for sub in ("images", "image_2", "label_2"):
        if (data / sub).is_dir():
            files += [p for p in (data / sub).iterdir() if p.is_file()]
    return files


def run(args: argparse.Namespace) -> int:
    from fastyolo.datasets import load_dataset
    from fastyolo.detector import Detector
    from fastyolo.metrics import evaluate, format_table, plot_pr_curves, require_coco_eval

    require_coco_eval()  # before a frame is evaluated, not after all of them
    if not args.model.is_file():
        raise ModelError(f"model file not found: {args.model}")
    _check(args)
    samples, report = load_dataset(args.data, args.labels, skip_malformed=args.skip_malformed)
    print(report)
    if not samples:
        raise DatasetError(f"no labelled frame of {args.data} has an image ({len(report.missing_images)} missing): "
                           "put the images in DATA/images/ or beside labels.csv")
    with tempfile.TemporaryDirectory(prefix="fastyolo-eval-") as tmp:
        model = args.model
        if model.suffix.lower() == ".pt":
            print(f"exporting {model} to ONNX ...", flush=True)
            model = checkpoint_to_onnx(model, Path(tmp))
        detector = Detector(model, backend=args.backend, precision=args.precision, conf=args.conf, iou=args.iou,
                            top_k=EVAL_TOP_K, threads=args.threads, tiles=args.tiles)
        predictions = detect_samples(detector, samples, args.batch)
        info = detector.info
    result = evaluate(predictions, samples, min_size=args.min_size, curves=args.plot is not None)
    curves = result.pop("curves", None)
    print(f"model      {args.model} ({info['backend']}, {info['precision']}), conf {args.conf}, NMS IoU {args.iou}"
          + (f", tiles {info['tiles']} (overlap {info['tile_overlap']:g})" if info["tiles"] != "off" else ""))
    if args.min_size > 0:
        print(f"ignored    boxes under {args.min_size:g} px on a side at the network input (neither found nor false)")
    print(format_table(result))
    print("AP50: VOC all-point at IoU 0.5; AP50:95: COCO (faster-coco-eval) over IoU 0.50:0.05:0.95")
    if args.json:
        payload = {
            "model": str(args.model), "data": str(args.data), "labels_format": report.format,
            "backend": info["backend"], "precision": info["precision"], "conf": args.conf, "iou": args.iou,
            "tiles": info["tiles"], "tile_overlap": info["tile_overlap"],
            **result,
            "dataset": {"frames": report.frames, "missing_images": len(report.missing_images),
                        "malformed_rows": report.malformed_rows, "boxes_clipped": report.boxes_clipped,
                        "boxes_dropped": report.boxes_dropped, "ignored_labels": report.ignored_labels},
        }
        write_text(args.json, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot_pr_curves({**result, "curves": curves}, args.plot, title=f"{args.model.name} on {args.data.name}")
        print(f"wrote {args.plot}")
    return 0
