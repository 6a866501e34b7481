"""Decode and encode speed of OpenCV against PyAV on a real clip (issue 21: video output people can play).

Decode: every frame to a BGR numpy array (what detect and bench hand the network), OpenCV's VideoCapture
with its default threads and with 1, PyAV with FFmpeg's frame+slice threads ("AUTO"), its default (slice
threads only) and 1 thread. Encode: the same frames, held in memory, written by fastyolo's VideoSink
(PyAV: H.264 in .mp4 at each x264 preset asked for, VP9 in .webm, Motion JPEG in .avi) and by OpenCV's
VideoWriter (mp4v, MJPG: the fallback where PyAV is absent). Each row: the median over --rounds of frames
per second (wall clock) and of CPU milliseconds per frame (all threads of the process: on a busy machine the
CPU time says more than the wall clock), and the file size per frame.

    python bench/video_io.py                        # the bundled clip, 485 frames, 3 rounds
    python bench/video_io.py --frames 100 --rounds 1 --json bench/artifacts/video_io.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from fastyolo.fileio import sample_video


def _timed(work: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the whole process, frames) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    frames = work()
    return time.perf_counter() - wall, time.process_time() - cpu, frames


def decode_opencv(path: Path, limit: int, threads: int | None) -> Callable[[], int]:
    def run() -> int:
        params = [] if threads is None else [cv2.CAP_PROP_N_THREADS, threads]
        capture = cv2.VideoCapture(str(path), cv2.CAP_ANY, params)
        n = 0
        while n < limit:
            ok, frame = capture.read()
            if not ok:
                break
            n += 1
        capture.release()
        return n
    return run


def decode_pyav(path: Path, limit: int, thread_type: str, threads: int) -> Callable[[], int]:
    import av

    def run() -> int:
        n = 0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type, stream.thread_count = thread_type, threads  # 0: FFmpeg picks (one per core)
            for frame in container.decode(stream):
                frame.to_ndarray(format="bgr24")
                n += 1
                if n >= limit:
                    break
        return n
    return run


def encode_sink(frames: list[np.ndarray], out: Path, fps: float, preset: str | None = None) -> Callable[[], int]:
    from fastyolo import writers

    def run() -> int:
        options = writers.ENCODER_OPTIONS["libx264"]
        saved = dict(options)
        if preset:
            options["preset"] = preset
        try:
            with writers.VideoSink(out, fps, (frames[0].shape[1], frames[0].shape[0])) as sink:
                for frame in frames:
                    sink.write(frame)
        finally:
            options.clear()
            options.update(saved)
        return sink.frames
    return run


def encode_opencv(frames: list[np.ndarray], out: Path, fps: float, fourcc: str) -> Callable[[], int]:
    def run() -> int:
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*fourcc), fps, (frames[0].shape[1], frames[0].shape[0]))
        for frame in frames:
            writer.write(frame)
        writer.release()
        return len(frames)
    return run


def measure(name: str, work: Callable[[], int], rounds: int, out: Path | None = None) -> dict:
    runs = [_timed(work) for _ in range(rounds)]
    frames = runs[0][2]
    row = {"name": name, "frames": frames,
           "fps": statistics.median(n / wall for wall, _, n in runs),
           "cpu_ms_per_frame": statistics.median(1000.0 * cpu / n for _, cpu, n in runs)}
    if out is not None:
        row["bytes_per_frame"] = out.stat().st_size // max(frames, 1)
    size = f"{row['bytes_per_frame'] / 1000:8.1f} kB" if "bytes_per_frame" in row else " " * 11
    print(f"{name:44s} {row['fps']:8.1f} FPS {row['cpu_ms_per_frame']:7.2f} CPU ms/frame {size}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", nargs="?", type=Path, default=sample_video(), help="a video [the bundled clip]")
    parser.add_argument("--frames", type=int, default=10_000, help="at most this many frames [all]")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each row; the median is shown [3]")
    parser.add_argument("--presets", default="veryfast", help="x264 presets to time, comma-separated [veryfast]")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.rounds < 1:
        parser.error("--frames and --rounds must be at least 1")
    if not args.video.is_file():
        parser.error(f"video not found: {args.video}")

    capture = cv2.VideoCapture(str(args.video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while len(frames) < args.frames:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    h, w = frames[0].shape[:2]
    print(f"{args.video.name}: {len(frames)} frames {w}x{h} at {fps:g} FPS, {os.cpu_count()} CPUs, "
          f"OpenCV {cv2.__version__}", flush=True)

    rows = []
    print("decode (to BGR arrays)")
    rows.append(measure("opencv, default threads", decode_opencv(args.video, len(frames), None), args.rounds))
    rows.append(measure("opencv, 1 thread", decode_opencv(args.video, len(frames), 1), args.rounds))
    try:
        import av
    except ImportError:
        av = None
        print("PyAV is not installed: its rows are skipped (pip install av)")
    if av is not None:
        for thread_type, threads in (("AUTO", 0), ("SLICE", 0), ("NONE", 1)):
            rows.append(measure(f"pyav, {thread_type} threads{'' if threads else ' (auto count)'}",
                                decode_pyav(args.video, len(frames), thread_type, threads), args.rounds))
    print("encode (frames in memory -> file)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if av is not None:
            for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
                out = folder / f"{preset}.mp4"
                rows.append(measure(f"pyav H.264 .mp4 (x264 {preset})", encode_sink(frames, out, fps, preset),
                                    args.rounds, out))
            for suffix, label in ((".webm", "VP9 .webm (realtime)"), (".avi", "Motion JPEG .avi")):
                out = folder / f"out{suffix}"
                rows.append(measure(f"pyav {label}", encode_sink(frames, out, fps), args.rounds, out))
        for fourcc, suffix in (("mp4v", ".mp4"), ("MJPG", ".avi")):
            out = folder / f"opencv{suffix}"
            rows.append(measure(f"opencv {fourcc} {suffix}", encode_opencv(frames, out, fps, fourcc), args.rounds, out))
    if args.json:
        meta = {"video": str(args.video), "frames": len(frames), "size": [w, h], "fps": fps, "rounds": args.rounds,
                "cpus": os.cpu_count(), "opencv": cv2.__version__, "pyav": getattr(av, "__version__", None)}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
