"""Timing the whole pipeline on a video, stage by stage, in latency or throughput mode.

latency:    batch 1, one frame in flight: decode -> preprocess -> infer -> postprocess. By default
            (overlap) frame n+1 is decoded and resized on a prefetch thread while frame n is in
            the network (fastyolo.prefetch: a queue of one), so the decode leaves the critical
            path without adding latency; overlap=False runs every step in series on one thread.
throughput: video decode on its own thread feeding a bounded queue (cv2 releases the GIL, so it
            overlaps inference), frames micro-batched `batch` at a time, several inference
            requests in flight (worker threads with one OpenVINO infer request each on a
            THROUGHPUT-compiled model; one worker for onnxruntime), decode + NMS as each completes.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastyolo.cfg import CPU_BACKENDS
from fastyolo.detections import Detections
from fastyolo.detector import Detector
from fastyolo.errors import FastYoloError

# The video I/O lives in fastyolo.fileio; re-exported here for scripts that imported it from bench.
from fastyolo.fileio import VideoReader, sample_video  # noqa: F401

# total: frame latency, from the start of the frame's decode to its detections (what a live camera waits).
# period: the critical path per frame, from the previous frame's detections to this one's (1 / FPS on
# average); in series it equals total, with the overlap it is shorter. Throughput mode: period is the
# run's average (seconds / frames).
STAGES = ("decode", "preprocess", "infer", "postprocess", "total", "period")
MODES = ("latency", "throughput")


@dataclass
class BenchResult:
    frames: int
    seconds: float
    info: dict
    times_ms: dict[str, np.ndarray] = field(repr=False)
    detections: int = 0
    mode: str = "latency"
    batch: int = 1
    in_flight: int = 1
    outputs: list[Detections] | None = field(default=None, repr=False)  # per frame, with keep=True
    overlap: bool = False  # latency mode: decode + resize on the prefetch thread, one frame ahead

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def percentiles(self) -> dict[str, dict[str, float]]:
        return {
            stage: {f"p{q}": round(float(np.percentile(t, q)), 3) for q in (50, 90, 99)}
            for stage, t in self.times_ms.items()
        }

    def overhead_share(self) -> float | None:
        """1 - infer / period at the medians: the share of each frame's time on the critical path spent
        outside the network (in series, period = total, the frame's whole latency).

        Latency mode only: in throughput mode the stages overlap and total includes queueing.
        """
        if self.mode != "latency":
            return None
        return 1.0 - float(np.median(self.times_ms["infer"])) / float(np.median(self.times_ms["period"]))

    def p50(self, stage: str) -> float:
        return float(np.median(self.times_ms[stage]))

    def to_json(self) -> dict:
        i = self.info
        return {
            "fps": round(self.fps, 2),
            "frames": self.frames,
            "backend": i["backend"],
            "precision": i["precision"],
            "threads": i["threads"],
            "model": i["model"],
            "untrained": i["untrained"],
            "device": i.get("device"),
            "detections": self.detections,
            "stages": self.percentiles(),
            "mode": self.mode,
            "batch": self.batch,
            "in_flight": self.in_flight,
            "streams": i.get("streams", 1),
            "thread_settings": i.get("thread_settings"),
            "requested_precision": i.get("requested_precision"),
            "backbone": i.get("backbone"),
            "overhead_share": None if self.overhead_share() is None else round(self.overhead_share(), 4),
            "overlap": self.overlap,
            # two different things, named apart: how long one frame waits, and how many frames a second
            "frame_latency_ms": self.percentiles()["total"],
            "input": i.get("input"),
            "normalize": i.get("normalize"),
            "tiles": i.get("tiles", "off"),
            "stage_unit": "ms per frame; total = frame latency (decode start to detections); period = critical path "
                          "per frame (previous frame's detections to this one's); throughput mode: a batch's time / "
                          "its frames",
        }

    def table(self) -> str:
        i = self.info
        threads = ", ".join(f"{k} {v}" for k, v in (i.get("thread_settings") or {}).items())
        series = "decode + resize one frame ahead on a thread" if self.overlap else "in series"
        how = (f"batch 1, one frame in flight, {series}" if self.mode == "latency" else
               f"batch {self.batch}, {self.in_flight} request(s) in flight, {i.get('streams', 1)} stream(s), decode thread")
        lines = [
            f"model      {i['model']}" + ("  (untrained weights: timing only)" if i["untrained"] else ""),
            f"backend    {i['backend']} on {i.get('device', 'CPU')}, precision {i['precision']}, threads {i['threads']}"
            + (f" ({threads})" if threads else ""),
            f"mode       {self.mode}: {how}",
            f"input      {i.get('input', '?')}, normalised on the {i.get('normalize', '?')}"
            + (f"; tiles {i['tiles']} (a frame's tiles in one network call)" if i.get("tiles", "off") != "off" else ""),
            f"frames     {self.frames} in {self.seconds:.2f} s: {self.fps:.1f} FPS end to end",
            f"latency    {self.p50('total'):.2f} ms p50 per frame, decode start to detections "
            "(not 1/FPS: frames overlap)" if self.overlap else
            f"latency    {self.p50('total'):.2f} ms p50 per frame, decode start to detections",
        ]
        if self.mode == "latency":
            lines.append(f"overhead   {100 * self.overhead_share():.1f}% of each frame's critical path outside the "
                         "network (1 - infer/period)")
        lines += [
            "",
            f"{'stage':<12}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}",
        ]
        for stage, p in self.percentiles().items():
            lines.append(f"{stage:<12}{p['p50']:>9.3f}{p['p90']:>9.3f}{p['p99']:>9.3f}")
        if self.mode == "throughput":
            lines.append("(stages overlap in throughput mode: per-frame shares of each batch; "
                         "total = decode start to detections)")
        return "\n".join(lines)


def run_bench(detector: Detector, video: str | Path, frames: int = 300, warmup: int = 10, progress: bool = True, *,
              mode: str = "latency", batch: int = 1, in_flight: int | None = None, keep: bool = False,
              overlap: bool = True) -> BenchResult:
    """Time decode -> preprocess -> infer -> postprocess on `frames` frames of `video` (looping it).

    The timed frames are always the video's first `frames` (after `warmup` untimed ones, then a
    rewind), so two runs see the same frames; `keep` returns every frame's Detections in order.
    overlap (latency mode): decode + resize the next frame on a thread while this one is in the
    network; False runs everything in series (the pipeline before the overlap existed).
    """
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if mode == "latency" and batch != 1:
        raise ValueError(f"latency mode is batch 1, one frame in flight: use mode='throughput' for batch {batch}")
    # Overlapped, the prefetch thread is the decoder's parallelism (VideoReader's decode_threads).
    reader = VideoReader(video, decode_threads=1 if mode == "latency" and overlap else None)
    try:
        if mode == "latency":
            run = _overlapped if overlap else _latency
            return run(detector, reader, frames, warmup, progress, keep)
        return _throughput(detector, reader, frames, warmup, progress, keep, batch, in_flight)
    finally:
        reader.close()


def _warm_up_one(detector: Detector, reader: VideoReader, warmup: int) -> None:
    """Run `warmup` frames (first-call compilation, caches), then start the video again."""
    for _ in range(warmup):
        detector.detect(_read(reader))
    reader.rewind()


def _read(reader: VideoReader):
    frame = reader.read()
    if frame is None:
        raise FastYoloError(f"{reader.path}: no frame could be decoded")
    return frame


def _latency(detector: Detector, reader: VideoReader, frames: int, warmup: int, progress: bool, keep: bool) -> BenchResult:
    times = np.zeros((len(STAGES), frames))
    outputs: list[Detections] = []
    stage: dict[str, float] = {}
    found = 0
    _warm_up_one(detector, reader, warmup)
    clock = time.perf_counter
    start = clock()
    for n in tqdm(range(frames), desc="bench", unit="frame", disable=not progress, leave=False):
        t0 = clock()
        frame = _read(reader)
        t1 = clock()
        result = detector.detect_batch([frame], timings=stage)[0]
        t4 = clock()
        found += len(result)
        if keep:
            outputs.append(result)
        times[:, n] = (t1 - t0, stage["preprocess"], stage["infer"], stage["postprocess"], t4 - t0, t4 - t0)
    seconds = clock() - start
    times *= 1000.0
    return BenchResult(frames, seconds, detector.info, dict(zip(STAGES, times, strict=True)), found,
                       "latency", 1, 1, outputs if keep else None)


def _overlapped(detector: Detector, reader: VideoReader, frames: int, warmup: int, progress: bool,
                keep: bool) -> BenchResult:
    """Latency mode with frame n+1 decoded and resized on the prefetch thread while frame n is in the network."""
    from fastyolo.prefetch import Prefetcher

    times = np.zeros((len(STAGES), frames))
    outputs: list[Detections] = []
    stage: dict[str, float] = {}
    found = 0
    _warm_up_one(detector, reader, warmup)
    clock = time.perf_counter
    left = [frames]

    def produce() -> tuple | None:
        if left[0] == 0:
            return None
        left[0] -= 1
        t0 = clock()
        frame = _read(reader)
        t1 = clock()
        resized = detector.prepare(frame)
        return resized, t0, t1 - t0, clock() - t1

    start = previous = clock()
    with Prefetcher(produce, depth=1, name="fastyolo-decode") as ahead:
        for n in tqdm(range(frames), desc="bench", unit="frame", disable=not progress, leave=False):
            resized, t0, decode, resize = ahead.get()
            result = detector.detect_batch([resized], timings=stage)[0]
            t4 = clock()
            found += len(result)
            if keep:
                outputs.append(result)
            times[:, n] = (decode, resize + stage["preprocess"], stage["infer"], stage["postprocess"], t4 - t0,
                           t4 - previous)
            previous = t4
    seconds = clock() - start
    times *= 1000.0
    return BenchResult(frames, seconds, detector.info, dict(zip(STAGES, times, strict=True)), found,
                       "latency", 1, 1, outputs if keep else None, overlap=True)


class _Batch:
    """One micro-batch on its way through the pipeline, with the clock readings the stages need."""

    def __init__(self, indices: list[int], frames: list[np.ndarray], decode_start: list[float]):
        self.indices = indices
        self.sizes = np.array([(f.shape[1], f.shape[0]) for f in frames], dtype=np.float64)
        self.decode_start = decode_start
        self.submitted = 0.0


def _decode_worker(reader: VideoReader, frames: int, out: queue.Queue, stop: threading.Event,
                   decode_ms: np.ndarray) -> None:
    """Decode frames into the bounded queue (blocking when inference falls behind); None ends it."""
    clock = time.perf_counter
    try:
        for n in range(frames):
            t0 = clock()
            frame = reader.read()
            decode_ms[n] = (clock() - t0) * 1000.0
            if frame is None:
                raise FastYoloError(f"{reader.path}: no frame could be decoded")
            while not stop.is_set():
                try:
                    out.put((n, frame, t0), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
    except BaseException as exc:  # handed to the main thread, which re-raises it
        out.put(exc)
        return
    out.put(None)


class _Runner:
    """Runs inference on worker threads and calls `done(batch, grids)` as each batch finishes.

    The workers share `Detector.parallel_runners`: on OpenVINO one synchronous infer request per
    worker on a THROUGHPUT-compiled model (its streams run requests side by side; `infer` releases
    the GIL); on onnxruntime one worker, since one run already uses every thread.
    """

    def __init__(self, detector: Detector, batch: int, in_flight: int | None, done):
        self.done = done
        self.errors: list[BaseException] = []
        runners, self.streams = detector.parallel_runners(batch, in_flight)
        self.idle: queue.SimpleQueue | None = queue.SimpleQueue()  # runners free to take a batch
        for run in runners:
            self.idle.put(run)
        self.in_flight = len(runners)
        self.pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="fastyolo-infer")
        self.slots = threading.Semaphore(self.in_flight)

    def _run(self, images: np.ndarray, job: _Batch) -> None:
        try:
            run = self.idle.get()
            try:
                grids = run(images)
            finally:
                self.idle.put(run)
            self.done(job, grids)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.slots.release()

    def submit(self, images: np.ndarray, job: _Batch) -> None:
        self.slots.acquire()  # waits for a free worker, so `submitted` is when this batch really starts
        job.submitted = time.perf_counter()
        self.pool.submit(self._run, images, job)

    def wait(self) -> None:
        for _ in range(self.in_flight):
            self.slots.acquire()
        for _ in range(self.in_flight):
            self.slots.release()
        if self.errors:
            raise self.errors[0]

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.idle = None
        self.done = None


def _pad(frames: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """A short last batch is padded by repeating its last frame: one compiled shape, same numbers."""
    return frames + [frames[-1]] * (batch - len(frames))


class _Collector:
    """Decodes each finished batch (on the worker thread that ran it) and records its frames' times."""

    def __init__(self, detector: Detector, frames: int, keep: bool, progress: bool):
        self.detector, self.keep = detector, keep
        self.times = np.zeros((len(STAGES), frames))
        self.outputs: list[Detections | None] = [None] * frames
        self.found = 0
        self.lock = threading.Lock()  # two workers can finish at once
        self.bar = tqdm(total=frames, desc="bench", unit="frame", disable=not progress, leave=False)

    def done(self, job: _Batch, grids: np.ndarray) -> None:
        clock = time.perf_counter
        t_infer = clock()
        count = len(job.indices)
        if not count:  # warm-up
            return
        results = self.detector.decode(grids[:count], job.sizes)
        t_post = clock()
        with self.lock:
            for k, n in enumerate(job.indices):
                self.times[2, n] = (t_infer - job.submitted) * 1000.0 / count
                self.times[3, n] = (t_post - t_infer) * 1000.0 / count
                self.times[4, n] = (t_post - job.decode_start[k]) * 1000.0
                self.found += len(results[k])
                if self.keep:
                    self.outputs[n] = results[k]
            self.bar.update(count)


def _warm_up(detector: Detector, runner: _Runner, reader: VideoReader, warmup: int, batch: int) -> None:
    """Untimed batches through the same asynchronous path (first runs compile and allocate), then a rewind."""
    warm = [reader.read() for _ in range(max(1, warmup))]
    for i in range(0, len(warm), batch):
        chunk = warm[i : i + batch]
        runner.submit(detector.network_input(_pad(chunk, batch)), _Batch([], chunk, []))
    runner.wait()
    reader.rewind()


def _next_batch(decoded: queue.Queue, batch: int) -> tuple[list[int], list[np.ndarray], list[float], bool]:
    """Up to `batch` decoded frames: (indices, frames, decode starts, whether the decoder finished)."""
    indices, chunk, starts = [], [], []
    while len(chunk) < batch:
        item = decoded.get()
        if item is None:
            return indices, chunk, starts, True
        if isinstance(item, BaseException):
            raise item
        indices.append(item[0])
        chunk.append(item[1])
        starts.append(item[2])
    return indices, chunk, starts, False


def _feed(detector: Detector, runner: _Runner, reader: VideoReader, frames: int, batch: int,
          times: np.ndarray) -> float:
    """Decode on a thread, preprocess micro-batches here, hand them to the runner; the seconds it all took."""
    clock = time.perf_counter
    decoded: queue.Queue = queue.Queue(maxsize=2 * batch)  # one batch ahead: enough to keep inference fed
    stop = threading.Event()
    decoder = threading.Thread(target=_decode_worker, args=(reader, frames, decoded, stop, times[0]),
                               name="fastyolo-decode", daemon=True)
    start = clock()
    decoder.start()
    try:
        finished = False
        while not finished:
            indices, chunk, starts, finished = _next_batch(decoded, batch)
            if not chunk:
                break
            t0 = clock()
            images = detector.network_input(_pad(chunk, batch))  # a fresh array: the last one may still be in flight
            times[1, indices] = (clock() - t0) * 1000.0 / len(chunk)
            runner.submit(images, _Batch(indices, chunk, starts))
            if runner.errors:
                raise runner.errors[0]
        runner.wait()
    finally:
        stop.set()
        decoder.join()
    return clock() - start


def _throughput(detector: Detector, reader: VideoReader, frames: int, warmup: int, progress: bool, keep: bool,
                batch: int, in_flight: int | None) -> BenchResult:
    if detector.info["backend"] not in CPU_BACKENDS:
        raise FastYoloError("throughput mode pipelines the CPU runtimes (OpenVINO, onnxruntime): use latency mode here")
    if detector.info.get("tiles", "off") != "off":
        raise FastYoloError(f"throughput mode runs whole frames, and this Detector tiles them ({detector.info['tiles']}): "
                            "use latency mode")
    collector = _Collector(detector, frames, keep, progress)
    runner = _Runner(detector, batch, in_flight, collector.done)
    try:
        _warm_up(detector, runner, reader, warmup, batch)
        seconds = _feed(detector, runner, reader, frames, batch, collector.times)
    finally:
        runner.close()
        collector.bar.close()
    times = collector.times
    times[5] = 1000.0 * seconds / frames  # period: the run's average (batches overlap)
    info = {**detector.info, "streams": runner.streams}
    return BenchResult(frames, seconds, info, dict(zip(STAGES, times, strict=True)), collector.found,
                       "throughput", batch, runner.in_flight, collector.outputs if keep else None)
