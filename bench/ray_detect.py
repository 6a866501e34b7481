"""Frames/s of `fastyolo detect --ray` with 1 and 2 workers of one CPU each against plain `fastyolo detect` run on
the same videos one after another (bench/RESULTS.md, "Ray"). About 4 minutes on 2 cores.

    python bench/ray_detect.py [--videos 4] [--frames 240] [--rounds 3] [--json bench/artifacts/ray_detect.json]

The videos are cuts of the bundled real highway clip (different stretches of it), written once into a temporary
folder. Plain detect runs with the runtime's default threads (all cores) and with --threads 1; the Ray runs start
a local Ray (`ray.init(num_cpus=2)`) once, and each job's seconds include starting its actors (each loads the
model), which is Ray's overhead beside the per-range hand-offs. Rows alternate in each round; medians are reported.
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


def run(count: int, frames: int, chunk: int, rounds: int) -> dict:
    import statistics

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = make_videos(tmp, count, frames)
        total = count * frames
        plain(videos[:1], tmp / "warm-up", None)  # numba's cache and the model file in the page cache: not timed
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
        ray_start = time.perf_counter() - started
        seconds: dict[str, list[float]] = {}
        try:
            for k in range(rounds):  # alternating rounds: a noisy host slows all rows alike
                for name, threads in (("plain detect (all cores)", None), ("plain detect --threads 1", 1)):
                    seconds.setdefault(name, []).append(plain(videos, tmp / f"{name.replace(' ', '_')}{k}", threads))
                for workers in (1, 2):
                    took, summary = on_ray(videos, tmp / f"ray{workers}_{k}", workers, chunk)
                    assert summary.frames == total, summary.lines()
                    seconds.setdefault(f"--ray, {workers} worker(s) x 1 CPU", []).append(took)
        finally:
            ray.shutdown()
    rows = {name: {"seconds": round(statistics.median(s), 2), "fps": round(total / statistics.median(s), 1),
                   "rounds": [round(x, 2) for x in s]} for name, s in seconds.items()}
    one, two = rows["--ray, 1 worker(s) x 1 CPU"], rows["--ray, 2 worker(s) x 1 CPU"]
    return {"videos": count, "frames_each": frames, "chunk_frames": chunk, "rounds": rounds,
            "ray_init_seconds": round(ray_start, 2),
            "rows": rows, "two_over_one": round(two["fps"] / one["fps"], 2),
            "two_over_plain": round(two["fps"] / rows["plain detect (all cores)"]["fps"], 2),
            "ray_overhead_ms_per_frame_1_worker": round(1000 * (one["seconds"] - rows["plain detect --threads 1"]["seconds"])
                                                        / total, 2)}


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--frames", type=int, default=240, help="frames per video")
    p.add_argument("--chunk-frames", type=int, default=120, help="frames per Ray task")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    result = run(args.videos, args.frames, args.chunk_frames, args.rounds)
    for name, row in result["rows"].items():
        print(f"{name:32s} {row['fps']:8.1f} frames/s  (median {row['seconds']:.2f} s of {row['rounds']})")
    print(f"2 workers / 1 worker: {result['two_over_one']}x (target >= 1.6); 2 workers / plain detect: "
          f"{result['two_over_plain']}x (target >= 1.0); ray.init {result['ray_init_seconds']} s; Ray's overhead with 1 "
          f"worker: {result['ray_overhead_ms_per_frame_1_worker']} ms a frame over plain --threads 1")
    if args.json:
        write_text(args.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main_()
