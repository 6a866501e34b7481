"""Frames/s of `fastyolo detect --ray` with 1 and 2 workers of one CPU each against plain `fastyolo detect` run on
the same videos one after another (bench/RESULTS.md, "Ray"). Under 3 minutes on 2 cores.

    python bench/ray_detect.py [--videos 4] [--frames 120] [--json bench/artifacts/ray_detect.json]

The videos are cuts of the bundled real highway clip (different stretches of it), written once into a temporary
folder. Plain detect runs with the runtime's default threads (all cores) and with --threads 1; the Ray runs start
a local Ray (`ray.init(num_cpus=2)`) once, and each job's seconds include starting its actors (each loads the
model), which is Ray's overhead beside the per-range hand-offs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fastyolo import distributed
from fastyolo.cli import main
from fastyolo.fileio import VideoReader, sample_video, write_text
from fastyolo.writers import VideoSink


def make_videos(folder: Path, count: int, frames: int) -> list[Path]:
    with VideoReader(sample_video(), loop=True) as reader:
        fps = reader.fps
        images = [reader.read() for _ in range(count * frames)]
    paths = []
    for k in range(count):
        path = folder / f"drive{k}.mp4"
        with VideoSink(path, fps, (images[0].shape[1], images[0].shape[0])) as sink:
            for image in images[k * frames:(k + 1) * frames]:
                sink.write(image)
        paths.append(path)
    return paths


def plain(videos: list[Path], folder: Path, threads: int | None) -> float:
    started = time.perf_counter()
    for video in videos:
        extra = [] if threads is None else ["--threads", str(threads)]
        assert main(["detect", str(video), "--jsonl", str(folder / f"{video.stem}.jsonl"), "--no-progress", *extra]) == 0
    return time.perf_counter() - started


def on_ray(videos: list[Path], folder: Path, workers: int, chunk: int) -> tuple[float, distributed.JobSummary]:
    started = time.perf_counter()
    summary = distributed.detect(videos, folder, workers=workers, threads=1, chunk_frames=chunk, progress=False)
    return time.perf_counter() - started, summary


def run(count: int, frames: int, chunk: int) -> dict:
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = make_videos(tmp, count, frames)
        total = count * frames
        rows = {}
        for name, threads in (("plain detect (all cores)", None), ("plain detect --threads 1", 1)):
            seconds = plain(videos, tmp / name.replace(" ", "_"), threads)
            rows[name] = {"seconds": round(seconds, 2), "fps": round(total / seconds, 1)}
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
        ray_start = time.perf_counter() - started
        try:
            for workers in (1, 2):
                seconds, summary = on_ray(videos, tmp / f"ray{workers}", workers, chunk)
                assert summary.frames == total, summary.lines()
                rows[f"--ray, {workers} worker(s) x 1 CPU"] = {"seconds": round(seconds, 2),
                                                              "fps": round(total / seconds, 1)}
        finally:
            ray.shutdown()
    one, two = rows["--ray, 1 worker(s) x 1 CPU"], rows["--ray, 2 worker(s) x 1 CPU"]
    return {"videos": count, "frames_each": frames, "chunk_frames": chunk, "ray_init_seconds": round(ray_start, 2),
            "rows": rows, "two_over_one": round(two["fps"] / one["fps"], 2),
            "two_over_plain": round(two["fps"] / rows["plain detect (all cores)"]["fps"], 2),
            "ray_overhead_ms_per_frame_1_worker": round(1000 * (one["seconds"] - rows["plain detect --threads 1"]["seconds"])
                                                        / total, 2)}


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--frames", type=int, default=120, help="frames per video")
    p.add_argument("--chunk-frames", type=int, default=60, help="frames per Ray task")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    result = run(args.videos, args.frames, args.chunk_frames)
    for name, row in result["rows"].items():
        print(f"{name:32s} {row['fps']:8.1f} frames/s  ({row['seconds']:.2f} s)")
    print(f"2 workers / 1 worker: {result['two_over_one']}x (target >= 1.6); 2 workers / plain detect: "
          f"{result['two_over_plain']}x (target >= 1.0); ray.init {result['ray_init_seconds']} s; Ray's overhead with 1 "
          f"worker: {result['ray_overhead_ms_per_frame_1_worker']} ms a frame over plain --threads 1")
    if args.json:
        write_text(args.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main_()
