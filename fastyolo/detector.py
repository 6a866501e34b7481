"""`fastyolo.Detector`: one object, any runtime, frames in, Detections out."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastyolo.detections import Detections
from fastyolo.errors import ModelError
from fastyolo.layout import INPUT_SIZE
from fastyolo.pipeline import CpuPipeline, Pipeline, default_threads
from fastyolo.preprocess import check_frame

ENGINE_SUFFIXES = (".plan", ".engine")


class Detector:
    """Detect cars, trucks and pedestrians in BGR frames.

    `model` is an exported `.onnx` (CPU: OpenVINO by default, or backend="onnxruntime") or a
    TensorRT `.plan` engine (NVIDIA GPU, needs the `[gpu]` extra).

    >>> det = Detector("model.onnx", conf=0.3)
    >>> for d in det.detect(cv2.imread("frame.jpg")):
    ...     print(d.label, d.score, d.box)
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        backend: str = "auto",
        precision: str = "fp32",
        conf: float = 0.25,
        iou: float = 0.45,
        top_k: int = 100,
        threads: int | None = None,
    ):
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
            raise ValueError(f"conf and iou are thresholds in [0, 1], got conf={conf}, iou={iou}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        self.conf, self.iou, self.top_k = float(conf), float(iou), int(top_k)
        threads = threads or default_threads()
        self.pipeline: Pipeline
        if path.suffix.lower() in ENGINE_SUFFIXES:
            if backend not in ("auto", "tensorrt"):
                raise ValueError(f"{path.name} is a TensorRT engine: backend must be 'auto' or 'tensorrt', not {backend!r}")
            from fastyolo.gpu import TensorRTPipeline  # raises GpuUnavailableError in one line

            self.pipeline = TensorRTPipeline(path, precision=precision)
        else:
            self.pipeline = CpuPipeline(path, backend, precision, threads)

    @property
    def info(self) -> dict[str, Any]:
        """Backend, device, precision that actually runs, input size, threads, model path."""
        return {**self.pipeline.info, "input_size": INPUT_SIZE, "conf": self.conf, "iou": self.iou}

    def detect(self, frame: np.ndarray) -> Detections:
        """Detect in one HxWx3 uint8 BGR frame of any size; boxes are in its pixels."""
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect in several frames (any sizes) with one network call."""
        frames = [check_frame(f) for f in frames]
        if not frames:
            return []
        sizes = np.array([(f.shape[1], f.shape[0]) for f in frames], dtype=np.float64)
        grids = self.pipeline.infer(self.pipeline.preprocess(frames))
        return self.pipeline.postprocess(grids, sizes, self.conf, self.iou, self.top_k)

    def track(self, frames: Iterable[np.ndarray], *, fps: float = 30.0, smooth: str = "kalman") -> Iterator[Detections]:
        """Detect in consecutive frames of one video; yields each frame's Detections with `track_ids`.

        Ids come from ByteTrack, boxes are smoothed per id (smooth="kalman", "ema" or "none"); see fastyolo.track.
        """
        from fastyolo.track import track_frames

        return track_frames(self, frames, fps=fps, smooth=smooth)

    def __repr__(self) -> str:
        i = self.pipeline.info
        return f"Detector({i['model']!r}, backend={i['backend']!r}, precision={i['precision']!r})"
