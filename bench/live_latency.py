"""Does overlapping decode with the network add latency on a live source? A paced camera stand-in.

No camera is attached to these machines, so the bundled real clip plays the camera: frame k
"arrives" at start + k / fps (its own 25 fps by default); `read()` waits for that moment, then
decodes the frame (as a camera driver decodes MJPEG/YUYV when the frame is read) and returns it
with its arrival time. Latency = arrival to detections. Two pipelines, the ones `fastyolo
bench` and `detect` run:

- sequential: read (wait + decode) -> resize -> network -> decode + NMS, all on one thread;
- overlapped: a prefetch thread reads and resizes frame n+1 (exactly one ahead, one decoder
  thread) while frame n is in the network.

    python bench/live_latency.py                       # packaged model, int8 and fp32, 300 frames a run
    python bench/live_latency.py --fps 60 --rounds 3   # a faster camera

Rounds alternate the two pipelines; medians over every frame of a pipeline's rounds are printed,
with the frames that arrived while the previous one was still being processed ("late").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


class PacedClip:
    """The clip as a live source: frame k is available from start + k / fps, decoded when read."""

    def __init__(self, path: Path, fps: float):
        from fastyolo.fileio import VideoReader

        # One decoder thread in both pipelines: a camera hands over each frame as it arrives, it does
        # not decode the stream ahead as a file decoder's frame threads do.
        self.reader = VideoReader(path, loop=True, decode_threads=1)
        self.period = 1.0 / fps
        self.start: float | None = None
        self.index = 0

    def read(self) -> tuple[np.ndarray, float]:
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        arrival = self.start + self.index * self.period
        self.index += 1
        if arrival > now:
            time.sleep(arrival - now)
        frame = self.reader.read()
        if frame is None:
            raise RuntimeError("the clip gave no frame")
        return frame, arrival

    def close(self) -> None:
        self.reader.close()


def sequential(detector, source: PacedClip, frames: int) -> list[tuple[float, float]]:
    """(arrival, done) of each frame, everything in series."""
    out = []
    for _ in range(frames):
        frame, arrival = source.read()
        detector.detect(frame)
        out.append((arrival, time.perf_counter()))
    return out


def overlapped(detector, source: PacedClip, frames: int) -> list[tuple[float, float]]:
    """(arrival, done) of each frame, read + resize of the next frame on the prefetch thread."""
    from fastyolo.prefetch import Prefetcher

    left = [frames]

    def produce():
        if left[0] == 0:
            return None
        left[0] -= 1
        frame, arrival = source.read()
        return detector.prepare(frame), arrival

    out = []
    with Prefetcher(produce, depth=1, name="live-decode") as ahead:
        while (item := ahead.get()) is not None:
            resized, arrival = item
            detector.detect_batch([resized])
            out.append((arrival, time.perf_counter()))
    return out


def summary(runs: list[list[tuple[float, float]]], period: float) -> dict:
    latency = np.array([(done - arrival) * 1000.0 for run in runs for arrival, done in run])
    # A frame is late when the previous one finished after it arrived (it queued behind it).
    late = sum(int(b[0] < a[1]) for run in runs for a, b in zip(run, run[1:], strict=False))
    return {"frames": int(latency.size), "p50_ms": float(np.percentile(latency, 50)),
            "p90_ms": float(np.percentile(latency, 90)), "p99_ms": float(np.percentile(latency, 99)),
            "late_frames": late, "camera_period_ms": period * 1000.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precisions", nargs="+", default=["int8", "fp32"])
    p.add_argument("--fps", type=float, default=None, help="camera rate [the clip's own]")
    p.add_argument("--frames", type=int, default=300, help="frames per run [300]")
    p.add_argument("--rounds", type=int, default=2, help="runs of each pipeline, alternating [2]")
    p.add_argument("--threads", type=int, default=None, help="inference threads [all cores]")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)

    from fastyolo import Detector
    from fastyolo.fileio import VideoReader, sample_video
    from fastyolo.shipped import shipped_model

    clip = sample_video()
    with VideoReader(clip, loop=False) as probe:
        fps = args.fps or probe.fps
    rows = []
    for precision in args.precisions:
        detector = Detector(shipped_model(precision), precision=precision, threads=args.threads)
        warm = PacedClip(clip, 1000.0)
        for _ in range(20):
            detector.detect(warm.read()[0])
        warm.close()
        runs: dict[str, list] = {"sequential": [], "overlapped": []}
        for r in range(args.rounds):
            for name, pipeline in (("sequential", sequential), ("overlapped", overlapped)):
                print(f"{precision} {name}: {args.frames} frames at {fps:g} fps (round {r + 1}/{args.rounds})",
                      flush=True)
                source = PacedClip(clip, fps)
                try:
                    runs[name].append(pipeline(detector, source, args.frames))
                finally:
                    source.close()
        for name, done in runs.items():
            row = {"model": f"packaged {precision}", "pipeline": name, **summary(done, 1.0 / fps),
                   "info": {k: str(v) for k, v in detector.info.items()}}
            rows.append(row)
    print(f"\nlive source: the bundled clip paced at {fps:g} fps; latency = frame arrival to detections")
    print(f"{'model':<16}{'pipeline':<12}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'late':>6}")
    for row in rows:
        print(f"{row['model']:<16}{row['pipeline']:<12}{row['p50_ms']:>8.2f}{row['p90_ms']:>8.2f}"
              f"{row['p99_ms']:>8.2f}{row['late_frames']:>6}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
