"""`fastyolo.Detector`: one object, any runtime, frames in, Detections out."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastyolo import cfg
from fastyolo import tiles as tiling
from fastyolo.detections import Detections
from fastyolo.errors import ModelError, UsageError
from fastyolo.layout import INPUT_SIZE
from fastyolo.pipeline import CpuPipeline, Pipeline, default_threads
from fastyolo.preprocess import Resized, check_frame, frame_size, prepare

ENGINE_SUFFIXES = cfg.ENGINE_SUFFIXES

_NO_LOCK = contextlib.nullcontext()


class Detector:
    """Detect cars, trucks and pedestrians in BGR frames.

    `model` is an exported `.onnx` (CPU: OpenVINO by default, or backend="onnxruntime") or a
    TensorRT `.plan` engine (NVIDIA GPU, needs the `[gpu]` extra), or a training checkpoint `.pt`
    (torch; on an NVIDIA GPU where TensorRT is not installed: device="cuda", precision="fp16").
    Without one, the trained model that ships in the package (`Detector()`; precision="int8" picks
    its quantised twin): see fastyolo/weights/README.md for what it can and cannot see.

    >>> det = Detector("model.onnx", conf=0.3)
    >>> for d in det.detect(cv2.imread("frame.jpg")):
    ...     print(d.label, d.score, d.box)

    Thread-safe: one Detector may be called from several threads. On the CPU each thread gets its
    own preprocess buffer and (OpenVINO) its own infer request, so calls run side by side; other
    runtimes (TensorRT) take a lock, so calls run one at a time.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        backend: str = "auto",
        precision: str = "fp32",
        conf: float = cfg.CONF,
        iou: float = cfg.IOU,
        top_k: int = cfg.TOP_K,
        threads: int | None = None,
        device: str | None = None,
        normalize: str = "auto",
        tiles: str | cfg.TileSpec = cfg.TILES,
        tile_overlap: float = cfg.TILE_OVERLAP,
    ):
        if model is None:  # the trained model that ships in the package (fastyolo/weights/README.md)
            from fastyolo.shipped import shipped_model

            model = shipped_model(precision if precision in cfg.PRECISIONS else "fp32")
        # A training checkpoint (.pt, or backend="torch") runs on torch, on `device` (default: the GPU if
        # torch sees one); fastyolo.gpu.torch_engine checks its own precision (fp32/fp16/bf16) and device.
        on_torch = backend == "torch" or Path(model).suffix.lower() == ".pt"
        cfg.check_runtime(model=model, backend="auto" if on_torch else backend, precision="fp32" if on_torch else precision,
                          conf=conf, iou=iou, threads=threads, top_k=top_k, flag=False)
        # tiles: "off", "auto", "3x1", "3x1+full" ... (fastyolo.tiles): every tile of every frame in one network call
        self.tiles = cfg.parse_tiles(tiles, "tiles")
        self.tile_overlap = cfg.check_tile_overlap(tile_overlap)
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        self.conf, self.iou, self.top_k = float(conf), float(iou), int(top_k)
        threads = threads or default_threads()
        self.pipeline: Pipeline
        if on_torch:
            from fastyolo.gpu.torch_engine import TorchPipeline

            self.pipeline = TorchPipeline(path, precision=precision, device=device)
        elif path.suffix.lower() in ENGINE_SUFFIXES:
            if backend not in ("auto", "tensorrt"):
                raise ValueError(f"{path.name} is a TensorRT engine: backend must be 'auto' or 'tensorrt', not {backend!r}")
            from fastyolo.gpu import TensorRTPipeline  # raises GpuUnavailableError in one line

            self.pipeline = TensorRTPipeline(path, precision=precision)
        else:
            # normalize: where the ImageNet normalisation runs (see fastyolo.pipeline.NORMALIZE_CHOICES)
            self.pipeline = CpuPipeline(path, backend, precision, threads, normalize)
        # A pipeline that is not thread-safe by itself (TensorRT: one context and stream) runs one call at a time.
        self._lock = None if getattr(self.pipeline, "thread_safe", False) else threading.Lock()
        if not self.tiles.off:
            tiling.warmup()

    @property
    def info(self) -> dict[str, Any]:
        """Backend, device, precision that actually runs, input size, threads, model path."""
        return {**self.pipeline.info, "input_size": INPUT_SIZE, "conf": self.conf, "iou": self.iou,
                "tiles": str(self.tiles), "tile_overlap": self.tile_overlap}

    def prepare(self, frame: np.ndarray) -> Resized:
        """Check and resize a frame now (any thread), so that detect/detect_batch skip that step.

        For overlapping the host work with inference: a decode thread calls this one frame ahead. With
        tiles, every tile is resized (a `fastyolo.tiles.Tiled`, still a Resized of the whole frame).
        """
        return prepare(frame) if self.tiles.off else tiling.prepare_tiled(frame, self.tiles, self.tile_overlap)

    def detect(self, frame: np.ndarray | Resized) -> Detections:
        """Detect in one HxWx3 uint8 BGR frame of any size (or a `prepare`d one); boxes are in its pixels."""
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: Sequence[np.ndarray | Resized], conf: float | None = None, *,
                     timings: MutableMapping[str, float] | None = None) -> list[Detections]:
        """Detect in several frames (any sizes, or `prepare`d ones) with one network call.

        conf: score threshold for this call only [the Detector's]; timings: a dict that receives the
        seconds spent in each stage ("preprocess", "infer", "postprocess") of this call.
        """
        conf = self.conf if conf is None else cfg.check_fraction("conf", conf)
        frames = [f if isinstance(f, Resized) else check_frame(f) for f in frames]
        if not frames:
            return []
        if not self.tiles.off:
            return self._run_tiled(frames, conf, timings)
        sizes = np.array([frame_size(f) for f in frames], dtype=np.float64)
        if self._lock is None:
            return self._run(frames, sizes, conf, timings)
        with self._lock:
            return self._run(frames, sizes, conf, timings)

    def _run_tiled(self, frames: list[np.ndarray | Resized], conf: float,
                   timings: MutableMapping[str, float] | None) -> list[Detections]:
        """Every window (tile, or whole frame) of every frame through one network call, then merged per frame."""
        clock = time.perf_counter
        t0 = clock()
        inputs: list[np.ndarray | Resized] = []
        plans = []
        for frame in frames:
            crops, windows = tiling.crops(frame, self.tiles, self.tile_overlap)
            inputs += crops
            plans.append((windows, *frame_size(frame)))
        sizes = np.array([frame_size(f) for f in inputs], dtype=np.float64)
        stage: dict[str, float] = {}
        with self._lock or _NO_LOCK:
            found = self._run(inputs, sizes, conf, stage)
        t1 = clock()
        out, start = [], 0
        for windows, width, height in plans:
            out.append(tiling.merge_detections(found[start : start + len(windows)], windows, width, height, self.iou,
                                               self.top_k))
            start += len(windows)
        if timings is not None:  # the crops count as preprocessing, the merge as postprocessing
            timings.update(preprocess=t1 - t0 - stage["infer"] - stage["postprocess"], infer=stage["infer"],
                           postprocess=stage["postprocess"] + clock() - t1)
        return out

    def _run(self, frames: list[np.ndarray], sizes: np.ndarray, conf: float,
             timings: MutableMapping[str, float] | None) -> list[Detections]:
        pipe = self.pipeline
        if timings is None:
            return pipe.postprocess(pipe.infer(pipe.preprocess(frames)), sizes, conf, self.iou, self.top_k)
        clock = time.perf_counter
        t0 = clock()
        images = pipe.preprocess(frames)
        t1 = clock()
        grids = pipe.infer(images)
        t2 = clock()
        found = pipe.postprocess(grids, sizes, conf, self.iou, self.top_k)
        timings.update(preprocess=t1 - t0, infer=t2 - t1, postprocess=clock() - t2)
        return found

    def raw_outputs(self, frames: Sequence[np.ndarray | Resized]) -> np.ndarray:
        """The network's (N, S, S, CELL_SIZE) float32 output for the frames, on the host (for agreement checks)."""
        self._untiled("raw_outputs")
        frames = [f if isinstance(f, Resized) else check_frame(f) for f in frames]
        with self._lock or _NO_LOCK:
            return np.array(self.pipeline.infer(self.pipeline.preprocess(frames)), np.float32)

    # The three below split a call into its steps for callers that schedule the steps themselves
    # (bench's throughput mode, agreement checks); CPU runtimes only, where every step is on the host.

    def decode(self, grids: np.ndarray, sizes: np.ndarray | Sequence[tuple[int, int]],
               conf: float | None = None) -> list[Detections]:
        """Decode + NMS of raw outputs (`raw_outputs`, or a `parallel_runners` runner's) into Detections.

        sizes: each frame's (width, height) in pixels, so boxes come out in frame pixels; conf: the
        score threshold for this call [the Detector's]. Raises ModelError on NaN/inf outputs.
        """
        self._untiled("decode")
        conf = self.conf if conf is None else cfg.check_fraction("conf", conf)
        sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
        return self._cpu("decode").postprocess(grids, sizes, conf, self.iou, self.top_k)

    def network_input(self, frames: Sequence[np.ndarray | Resized]) -> np.ndarray:
        """The network's input for `frames` (any sizes, or `prepare`d) in a new array, safe to keep in flight."""
        self._untiled("network_input")
        frames = [f if isinstance(f, Resized) else check_frame(f) for f in frames]
        return self._cpu("network_input").new_input(frames)

    def parallel_runners(self, batch: int, count: int | None = None) -> tuple[list[Callable[[np.ndarray], np.ndarray]], int]:
        """(runners, streams): `run(network_input) -> raw outputs` callables for batches of `batch` frames
        that may run at the same time, each on its own thread (one batch at a time per runner).

        OpenVINO: one infer request each on a model compiled with the THROUGHPUT hint, which splits the
        threads into `streams` (count: the plugin's optimum by default); onnxruntime: `count` (default 1)
        handles on its thread-safe session, since one run already uses every thread.
        """
        return self._cpu("parallel_runners").parallel_runners(batch, count)

    def _untiled(self, what: str) -> None:
        """The step-by-step calls see whole frames: with tiles on they would silently drop the tiles."""
        if not self.tiles.off:
            raise UsageError(f"Detector.{what} runs whole frames, and this Detector tiles them (tiles={self.tiles}): "
                             "use detect_batch, or a Detector with tiles='off'")

    def _cpu(self, what: str) -> CpuPipeline:
        if not isinstance(self.pipeline, CpuPipeline):
            raise ValueError(f"Detector.{what} runs on the CPU runtimes (OpenVINO, onnxruntime), "
                             f"not {self.pipeline.info['backend']}: use detect_batch")
        return self.pipeline

    def track(self, frames: Iterable[np.ndarray], *, fps: float = 30.0, smooth: str = "kalman") -> Iterator[Detections]:
        """Detect in consecutive frames of one video; yields each frame's Detections with `track_ids`.

        Ids come from ByteTrack, boxes are smoothed per id (smooth="kalman", "ema" or "none"); see fastyolo.track.
        """
        from fastyolo.track import track_frames

        return track_frames(self, frames, fps=fps, smooth=smooth)

    def __repr__(self) -> str:
        i = self.pipeline.info
        return f"Detector({i['model']!r}, backend={i['backend']!r}, precision={i['precision']!r})"
