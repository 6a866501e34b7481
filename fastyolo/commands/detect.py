"""fastyolo detect SOURCE --model M: detect (and track) in images, a folder, a glob, a video or a camera."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np

from fastyolo import cfg
from fastyolo.errors import FastYoloError, UsageError
from fastyolo.fileio import IMAGE_SUFFIXES, check_outputs, same_file, sigterm_as_interrupt
from fastyolo.layout import CLASS_NAMES
from fastyolo.track import SMOOTHERS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "detect", help="detect (and track) objects in images, a folder, a glob, a video or a camera; save them drawn",
        description="Detect cars, trucks and pedestrians and write annotated images/video and/or JSON lines or CSV. "
                    "With no -o, --jsonl or --csv, JSON lines go to stdout.",
    )
    p.add_argument("source", nargs="+", metavar="SOURCE",
                   help="image, folder of images, quoted glob ('frames/*.png'), video file, or camera index (0); "
                        "several with --ray")
    p.add_argument("--model", type=Path,
                   help="exported .onnx (or TensorRT .plan) [the packaged model, for --precision]")
    p.add_argument("-o", "--output", type=Path,
                   help="annotated video for a video or camera (.mp4/.mkv: H.264, .webm: VP9, .avi: Motion JPEG; "
                        ".mkv, .webm and .avi also stay playable if the process is killed outright); a folder (created) "
                        "for images, or an image file for one image")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--jsonl", help="detections per frame as JSON lines ('-' for stdout)")
    out.add_argument("--csv", help="one CSV row per detection ('-' for stdout)")
    p.add_argument("--track", action="store_true", help="give each object a track id across frames and smooth its box")
    p.add_argument("--smooth", default="kalman", choices=SMOOTHERS, help="with --track: box smoothing [kalman]")
    p.add_argument("--classes", help=f"only these classes, comma-separated (of {','.join(CLASS_NAMES)})")
    cfg.add_runtime_options(p)
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = cfg.add_ray_options(p, module="fastyolo.distributed",
                              run="detect (-o is then a folder with one NAME.jsonl per source and manifest.json)",
                              actors="Detector", chunk="frames (or images) per task of a long video or a folder")
    ray.add_argument("--table", choices=("jsonl", "csv"), default="jsonl",
                     help="with --ray: the per-source file, OUTDIR/NAME.jsonl or .csv [jsonl]")
    ray.add_argument("--annotate", action="store_true",
                     help="with --ray: also OUTDIR/NAME.mp4 per video (one task per video) and OUTDIR/NAME/ per folder")
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


def frame_detections(detector, tracker, keep: np.ndarray | None, image: np.ndarray, prepared=None):
    """One frame's detections as detect writes them: kept classes only, tracked and smoothed with a tracker.
    Shared with the Ray workers (fastyolo.distributed), so that --ray writes what a single process writes."""
    from fastyolo.track import detect_for_tracking

    frame = image if prepared is None else prepared
    if tracker is None:
        dets = detector.detect(frame)
        return dets if keep is None else dets[np.isin(dets.class_ids, keep)]
    dets = detect_for_tracking(detector, frame)
    dets = dets if keep is None else dets[np.isin(dets.class_ids, keep)]
    return tracker.update(dets, (image.shape[1], image.shape[0]))


def _check(args: argparse.Namespace, source) -> None:
    """Every option and output path, before the model is loaded or a frame is read."""
    cfg.check_runtime_args(args, args.model)
    cfg.check_at_least("--max-frames", args.max_frames, 1, optional=True)
    inputs = [args.model, *source.paths]
    outputs = [(f"--{name}", getattr(args, name)) for name in ("jsonl", "csv")]
    if args.output is not None and source.kind != "images":
        if args.output.suffix == "":
            raise FastYoloError(f"{source.kind} output needs a video file name like {args.output}.mp4")
        outputs.append(("-o", args.output))
    check_outputs(outputs, inputs)
    if args.output is not None and source.kind == "images":
        for path in source.paths:
            if same_file(args.output, path):
                raise FastYoloError(f"-o {args.output} is the input {path}: choose another output path")


def run(args: argparse.Namespace) -> int:
    from fastyolo.sources import open_source

    keep = parse_classes(args.classes)
    if args.ray is not None:
        return _run_ray(args, keep)
    ray_only = [f for f, v in (("--workers", args.workers), ("--chunk-frames", args.chunk_frames),
                                ("--annotate", args.annotate), ("--table", args.table != "jsonl")) if v]
    if ray_only:
        raise UsageError(f"{ray_only[0]} goes with --ray")
    if len(args.source) > 1:
        raise UsageError(f"{len(args.source)} sources: one detect takes one SOURCE, or several with --ray -o OUTDIR")
    args.source = args.source[0]
    if args.model is None:
        from fastyolo.shipped import shipped_model

        args.model = shipped_model(args.precision)  # int8: its quantised twin; bf16: the fp32 file with the hint
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_source(args.source))
        _check(args, source)
        stack.enter_context(sigterm_as_interrupt())  # kill/timeout/docker stop: finish the video as on Ctrl-C
        run = _Run(args, source, keep)
        stack.callback(run.report)  # registered before the sinks, so it runs after they close (LIFO)
        run.open(stack)
        run.loop()
    if source.kind == "images" and run.done == 0:
        raise FastYoloError(f"none of the {len(source)} files could be read as an image")
    if run.done == 0:
        raise FastYoloError(f"no frame could be decoded from {source.name} (corrupt, or an unsupported codec)")
    return 0


def _run_ray(args: argparse.Namespace, keep: np.ndarray | None) -> int:
    """detect SOURCES... --ray [ADDRESS] -o OUTDIR: the sources as tasks of a Ray job (fastyolo.distributed)."""
    from fastyolo import distributed

    if args.output is None:
        raise UsageError("--ray writes a folder: pass -o OUTDIR (one NAME.jsonl per source, manifest.json)")
    for flag in ("jsonl", "csv"):
        if getattr(args, flag):
            raise UsageError(f"--{flag} names one file; with --ray each source gets OUTDIR/NAME.jsonl "
                             "(--table csv for OUTDIR/NAME.csv)")
    if args.max_frames is not None:
        raise UsageError("--max-frames is for one process; with --ray every frame of every source is detected")
    if args.track or args.annotate:
        why = "a tracker needs a video's frames in order" if args.track else "an annotated video is one stream"
        print(f"detect --ray: one task per video, not per frame range ({why})", file=sys.stderr)
    with sigterm_as_interrupt():  # kill/timeout: the parts done stay on disk, the same command resumes
        summary = distributed.detect(
            args.source, args.output, model=args.model, address=None if args.ray == "local" else args.ray,
            workers=args.workers, threads=args.threads or 1, backend=args.backend, precision=args.precision,
            conf=args.conf, iou=args.iou, tiles=args.tiles, track=args.track, smooth=args.smooth,
            classes=None if keep is None else keep.tolist(), table=args.table, annotate=args.annotate,
            chunk_frames=args.chunk_frames or distributed.DEFAULT_CHUNK, progress=not args.no_progress)
    distributed.print_summary(summary)
    if not summary.done and not summary.already:
        raise FastYoloError("no source could be detected (see the lines above)")
    return 0


class _Run:
    """One detect run: the detector, the tracker and the sinks, and how far it got."""

    def __init__(self, args: argparse.Namespace, source, keep: np.ndarray | None):
        self.args, self.source, self.keep = args, source, keep
        self.video_sink = self.image_sink = self.table = None
        self.done, self.started, self.interrupted, self.limited = 0, False, True, False

    def open(self, stack: contextlib.ExitStack) -> None:
        from tqdm import tqdm

        from fastyolo.detector import Detector
        from fastyolo.track import Tracker
        from fastyolo.writers import CsvSink, ImageSink, JsonlSink

        args = self.args
        if args.output is not None and self.source.kind == "images":
            self.image_sink = stack.enter_context(ImageSink(args.output, self.source.paths))
        self.detector = Detector(args.model, backend=args.backend, precision=args.precision, conf=args.conf,
                                 iou=args.iou, threads=args.threads, tiles=args.tiles)
        self.tracker = (Tracker(conf=self.detector.conf, fps=self.source.fps or 30.0, smooth=args.smooth)
                        if args.track else None)
        if args.csv:
            self.table = stack.enter_context(CsvSink(args.csv))
        elif args.jsonl or args.output is None:
            self.table = stack.enter_context(JsonlSink(args.jsonl or "-"))
        total = len(self.source) or None
        if args.max_frames:
            total = min(total or args.max_frames, args.max_frames)
        self.bar = stack.enter_context(tqdm(total=total, desc="detect", unit="frame", disable=args.no_progress,
                                            dynamic_ncols=True))
        self.stack = stack
        self.started = True

    def detections(self, image: np.ndarray, prepared=None):
        """Detections of one frame; `prepared`: the frame already resized (Detector.prepare) on the prefetch thread."""
        return frame_detections(self.detector, self.tracker, self.keep, image, prepared)

    def frames(self):
        """(Frame, resized or None): video files are read and resized one frame ahead on a thread
        (fastyolo.prefetch), so decoding overlaps inference; image files and cameras are read in turn.
        A camera's next frame is not there yet while this one is in the network, so a thread has nothing
        to overlap and only adds its hand-off to the latency (0.2-0.9 ms, bench/live_latency.py)."""
        if self.source.kind in ("images", "camera"):
            return ((frame, None) for frame in self.source)
        from fastyolo.prefetch import prefetch

        return prefetch(self.source, lambda frame: self.detector.prepare(frame.image))

    def loop(self) -> None:
        from fastyolo.draw import annotate
        from fastyolo.writers import VideoSink

        args = self.args
        frames = self.frames()
        try:
            for frame, prepared in frames:
                dets = self.detections(frame.image, prepared)
                if self.table is not None:
                    self.table.write(frame.index, dets, frame.source)
                if self.image_sink is not None:
                    self.image_sink.write(annotate(frame.image, dets), frame.path)
                elif args.output is not None:
                    if self.video_sink is None:  # sized by the first frame: the input's size, at its frame rate
                        size = (frame.image.shape[1], frame.image.shape[0])
                        self.video_sink = self.stack.enter_context(VideoSink(args.output, self.source.fps or 30.0, size))
                    self.video_sink.write(annotate(frame.image, dets))
                self.done += 1
                self.bar.update(1)
                if args.max_frames and self.done >= args.max_frames:
                    self.limited = True
                    break
        finally:  # stop the prefetch thread before the source is released
            frames.close()
        self.interrupted = False

    def report(self) -> None:
        if self.started:  # an error before the first frame is reported by itself, in one line
            _report(self.args, self.source, self.done, self.interrupted, self.video_sink)
            note = None if self.interrupted or self.limited else getattr(self.source, "truncated", lambda: None)()
            if note:
                print(f"warning: {note}", file=sys.stderr)


def _report(args, source, done: int, interrupted: bool, video_sink) -> None:
    err = sys.stderr
    if source.skipped:
        print(f"skipped {len(source.skipped)} unreadable file(s):", file=err)
        for path, reason in source.skipped:
            print(f"  {path}: {reason}", file=err)
    stop = " before the run stopped" if interrupted else ""
    if video_sink is not None and video_sink.written:  # a failed write said so itself, and left no file
        w, h = video_sink.size
        print(f"wrote {video_sink.path} ({video_sink.frames} frames, {w}x{h} at {source.fps:g} FPS, "
              f"{video_sink.codec}){stop}", file=err)
    elif args.output is not None and source.kind == "images":
        where = args.output if args.output.suffix.lower() in IMAGE_SUFFIXES else f"{args.output}/"
        print(f"wrote {done} annotated image(s) to {where}{stop}", file=err)
    for text in (args.jsonl, args.csv):
        if text and text != "-":
            print(f"wrote {text} ({done} frames){stop}", file=err)
    if source.skipped:
        print(f"{done} of {len(source)} files done, {len(source.skipped)} skipped", file=err)
