"""The three stages every runtime implements, so the Detector and `bench` can time each one."""

from __future__ import annotations

import os
import threading
from typing import Any, Protocol

import cv2
import numba
import numpy as np

from fastyolo.backends import open_session
from fastyolo.backends.base import available_cpus, wrong_output
from fastyolo.detections import Detections
from fastyolo.errors import ModelError
from fastyolo.input_format import NORMALIZED
from fastyolo.kernels import decode_nms_batch, warmup
from fastyolo.layout import output_shape
from fastyolo.model_file import read_onnx
from fastyolo.preprocess import Resized, preprocess_for

# Where the normalisation runs: "host" (numpy, a model that takes normalised floats), "graph" (a model
# exported with it inside, taking uint8 pixels), "ppp" (OpenVINO's PrePostProcessor in front of a
# normalised-float model); "auto" is "graph" for a uint8 model and "host" otherwise (every older model).
NORMALIZE_CHOICES = ("auto", "host", "graph", "ppp")


def normalize_where(requested: str, model_format: str) -> str:
    """Resolve `requested` (NORMALIZE_CHOICES) for a model of input format `model_format`; ValueError if impossible."""
    if requested not in NORMALIZE_CHOICES:
        raise ValueError(f"unknown normalize {requested!r}: choose one of {', '.join(NORMALIZE_CHOICES)}")
    native = "host" if model_format == NORMALIZED else "graph"
    if requested == "auto":
        return native
    if requested in ("host", "ppp") and native == "graph":
        raise ValueError(f"this model takes uint8 pixels and normalises in its graph: normalize={requested!r} needs a "
                         "model that takes normalised floats (export with --input normalized)")
    if requested == "graph" and native == "host":
        raise ValueError("this model takes normalised floats: normalize='graph' needs a model exported with its "
                         "normalisation inside (fastyolo export, default --input uint8), or use 'ppp' on OpenVINO")
    return requested


class Pipeline(Protocol):
    info: dict[str, Any]

    def preprocess(self, frames: list[np.ndarray]) -> Any:
        """Checked BGR frames -> the runtime's input (host array, or device buffer on the GPU)."""

    def infer(self, batch: Any) -> Any:
        """Network input -> the (N, S, S, CELL_SIZE) output, wherever the runtime keeps it."""

    def postprocess(self, grids: Any, sizes: np.ndarray, conf: float, iou: float, top_k: int) -> list[Detections]:
        """Decode + NMS of the output; sizes is (N, 2) frame width, height."""


def default_threads() -> int:
    return available_cpus()


def check_output(grids: Any, frames: int, model: str | os.PathLike) -> np.ndarray:
    """The runtime's output, refused unless it is (frames, S, S, CELL_SIZE) float32: a model's header may
    declare that shape and compute another (onnxruntime only warns, OpenVINO runs what the graph computes),
    and the decode kernel indexes without bounds checks, so it would read past the buffer. O(1): no copy."""
    shape, dtype = tuple(getattr(grids, "shape", ())), getattr(grids, "dtype", None)
    if shape != output_shape(frames) or dtype != np.float32:
        raise wrong_output(model, shape, dtype, frames)
    return grids


def split_batch(boxes, scores, classes, counts) -> list[Detections]:
    """Padded per-frame kernel outputs -> one Detections per frame (copies, so buffers can be reused)."""
    return [
        Detections(boxes[i, :n].copy(), scores[i, :n].copy(), classes[i, :n].copy())
        for i, n in enumerate(counts.tolist())
    ]


class CpuPipeline:
    """An ONNX on OpenVINO or onnxruntime, decode + NMS by the numba @njit kernel.

    Thread-safe: the preprocess buffer is per thread (reused across that thread's calls, so no
    per-frame allocation), onnxruntime's `run` is thread-safe and OpenVINO gets one infer request per
    thread; the decode kernel allocates its outputs per call.
    """

    thread_safe = True

    def __init__(self, path: str | os.PathLike, backend: str, precision: str, threads: int, normalize: str = "auto"):
        self.model = read_onnx(path)
        self.normalize = normalize_where(normalize, self.model.input_format)
        cv2.setNumThreads(threads)  # OpenCV's resize/decode share the cores with inference
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # for any parallel kernel
        self.session = open_session(self.model, backend, precision, threads, ppp=self.normalize == "ppp")
        self.input_format = self.session.input_format  # what the host hands the runtime
        self._local = threading.local()  # .input: this thread's preprocess buffer
        warmup()
        self.info = {
            "backend": self.session.name,
            "device": "CPU",
            "precision": self.session.precision,
            "requested_precision": precision,
            "threads": self.session.threads,
            # what each library was told, read back from it
            "thread_settings": {"opencv": cv2.getNumThreads(), "numba": numba.get_num_threads(),
                                self.session.name: self.session.threads},
            "model": str(self.model.path),
            "backbone": self.model.backbone,
            "untrained": self.model.untrained,
            "input": self.model.input_format,
            "normalize": self.normalize,
        }

    def preprocess(self, frames: list[np.ndarray | Resized]) -> np.ndarray:
        out = self._local.input = preprocess_for(self.input_format, frames, getattr(self._local, "input", None))
        return out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return check_output(self.session.run(batch), batch.shape[0], self.model.path)

    def new_input(self, frames: list[np.ndarray | Resized]) -> np.ndarray:
        """The network input for `frames` in a fresh array (preprocess reuses this thread's buffer)."""
        return preprocess_for(self.input_format, frames, None)

    def parallel_runners(self, batch: int, count: int | None = None) -> tuple[list, int]:
        """(runners, streams): `run(images) -> grids` callables that may run at once, one per thread.

        OpenVINO: one infer request each on a THROUGHPUT-compiled model (`count` defaults to the
        plugin's optimum); onnxruntime: its thread-safe `run`, `count` times (default 1: one run
        already uses every thread).
        """
        if hasattr(self.session, "throughput_runners"):
            return self.session.throughput_runners(batch, count)
        return [self.session.run] * (count or 1), 1

    def postprocess(self, grids: np.ndarray, sizes: np.ndarray, conf: float, iou: float, top_k: int) -> list[Detections]:
        # Outputs reach here from infer, parallel runners and callers of Detector.decode: the kernel trusts the shape.
        check_output(grids, len(sizes), self.model.path)
        # Sigmoid/softmax outputs are finite; NaN or inf means a broken model, and the kernels'
        # comparisons would quietly drop such boxes instead of saying so.
        if not np.isfinite(grids).all():
            raise ModelError(f"{self.model.path} produced NaN or infinite outputs: the model file is broken, re-export it")
        return split_batch(*decode_nms_batch(grids, sizes, conf, iou, top_k))
