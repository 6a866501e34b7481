"""fastyolo detect SOURCE --model M: detect (and track) in images, a folder, a glob, a video or a camera."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fastyolo.backends import BACKENDS, PRECISIONS
from fastyolo.errors import FastYoloError
from fastyolo.layout import CLASS_NAMES
from fastyolo.sources import IMAGE_SUFFIXES
from fastyolo.track import SMOOTHERS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "detect", help="detect (and track) objects in images, a folder, a glob, a video or a camera; save them drawn",
        description="Detect cars, trucks and pedestrians and write annotated images/video and/or JSON lines or CSV. "
                    "With no -o, --jsonl or --csv, JSON lines go to stdout.",
    )
    p.add_argument("source", help="image, folder of images, quoted glob ('frames/*.png'), video file, or camera index (0)")
    p.add_argument("--model", type=Path, required=True, help="exported .onnx (or TensorRT .plan)")
    p.add_argument("-o", "--output", type=Path,
                   help="annotated video for a video or camera (.mp4; .mkv or .avi also stay playable if the process "
                        "is killed); a folder (created) for images, "
                        "or an image file for one image")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--jsonl", help="detections per frame as JSON lines ('-' for stdout)")
    out.add_argument("--csv", help="one CSV row per detection ('-' for stdout)")
    p.add_argument("--track", action="store_true", help="give each object a track id across frames and smooth its box")
    p.add_argument("--smooth", default="kalman", choices=SMOOTHERS, help="with --track: box smoothing [kalman]")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold [0.25]")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold [0.45]")
    p.add_argument("--classes", help=f"only these classes, comma-separated (of {','.join(CLASS_NAMES)})")
    p.add_argument("--backend", default="auto", choices=("auto", *BACKENDS, "tensorrt"))
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--threads", type=int, default=None, help="CPU threads [all cores]")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_classes(text: str | None) -> np.ndarray | None:
    """'Car,truck' -> class ids; unknown names are an error listing the valid ones."""
    if not text:
        return None
    lower = {name.lower(): i for i, name in enumerate(CLASS_NAMES)}
    ids = []
    for name in (t.strip() for t in text.split(",")):
        if not name:
            continue
        if name.lower() not in lower:
            raise FastYoloError(f"unknown class {name!r} in --classes: choose from {','.join(CLASS_NAMES)}")
        ids.append(lower[name.lower()])
    return np.array(sorted(set(ids)), np.int32)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fastyolo.detector import Detector
    from fastyolo.draw import annotate
    from fastyolo.sources import open_source
    from fastyolo.track import Tracker, detect_for_tracking
    from fastyolo.writers import CsvSink, ImageSink, JsonlSink, VideoSink, refuse_overwrite

    keep = parse_classes(args.classes)
    if args.max_frames is not None and args.max_frames < 1:
        raise FastYoloError(f"--max-frames must be at least 1, got {args.max_frames}")
    source = open_source(args.source)
    video_sink = image_sink = table = bar = None
    done = 0
    started, interrupted = False, True
    try:
        images = source.kind == "images"
        if args.output is not None:
            if images:
                image_sink = ImageSink(args.output, source.paths)
            else:
                refuse_overwrite(args.output, source.paths, "output")
                if args.output.suffix == "":
                    raise FastYoloError(f"{source.kind} output needs a video file name like {args.output}.mp4")
        for text in (args.jsonl, args.csv):
            if text and text != "-":
                refuse_overwrite(Path(text), source.paths, "output")
        detector = Detector(args.model, backend=args.backend, precision=args.precision, conf=args.conf,
                            iou=args.iou, threads=args.threads)
        tracker = Tracker(conf=detector.conf, fps=source.fps or 30.0, smooth=args.smooth) if args.track else None
        if args.csv:
            table = CsvSink(args.csv)
        elif args.jsonl or args.output is None:
            table = JsonlSink(args.jsonl or "-")
        total = len(source) or None
        if args.max_frames:
            total = min(total or args.max_frames, args.max_frames)
        bar = tqdm(total=total, desc="detect", unit="frame", disable=args.no_progress, dynamic_ncols=True)
        started = True
        for frame in source:
            size = (frame.image.shape[1], frame.image.shape[0])
            if tracker is None:
                dets = detector.detect(frame.image)
                dets = dets if keep is None else dets[np.isin(dets.class_ids, keep)]
            else:
                dets = detect_for_tracking(detector, frame.image)
                dets = tracker.update(dets if keep is None else dets[np.isin(dets.class_ids, keep)], size)
            if table is not None:
                table.write(frame.index, dets, frame.path)
            if image_sink is not None:
                image_sink.write(annotate(frame.image, dets), frame.path)
            elif args.output is not None:
                if video_sink is None:  # sized by the first frame: the input's size, at its frame rate
                    video_sink = VideoSink(args.output, source.fps or 30.0, size)
                video_sink.write(annotate(frame.image, dets))
            done += 1
            bar.update(1)
            if args.max_frames and done >= args.max_frames:
                break
        interrupted = False
    finally:
        for sink in (video_sink, image_sink, table):
            if sink is not None:
                sink.close()
        if bar is not None:
            bar.close()
        source.close()
        if started:  # an error before the first frame is reported by itself, in one line
            _report(args, source, done, interrupted, video_sink)
    if source.kind == "images" and done == 0:
        raise FastYoloError(f"none of the {len(source)} files could be read as an image")
    if done == 0:
        raise FastYoloError(f"no frame could be decoded from {source.name} (corrupt, or an unsupported codec)")
    return 0


def _report(args, source, done: int, interrupted: bool, video_sink) -> None:
    err = sys.stderr
    if source.skipped:
        print(f"skipped {len(source.skipped)} unreadable file(s):", file=err)
        for path, reason in source.skipped:
            print(f"  {path}: {reason}", file=err)
    stop = " before the run stopped" if interrupted else ""
    if video_sink is not None:
        w, h = video_sink.size
        print(f"wrote {video_sink.path} ({video_sink.frames} frames, {w}x{h} at {source.fps:g} FPS){stop}", file=err)
    elif args.output is not None and source.kind == "images":
        where = args.output if args.output.suffix.lower() in IMAGE_SUFFIXES else f"{args.output}/"
        print(f"wrote {done} annotated image(s) to {where}{stop}", file=err)
    for text in (args.jsonl, args.csv):
        if text and text != "-":
            print(f"wrote {text} ({done} frames){stop}", file=err)
    if source.skipped:
        print(f"{done} of {len(source)} files done, {len(source.skipped)} skipped", file=err)
