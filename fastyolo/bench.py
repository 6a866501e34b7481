"""Timing the whole pipeline on a video, stage by stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from fastyolo.detector import Detector
from fastyolo.errors import FastYoloError

STAGES = ("decode", "preprocess", "infer", "postprocess", "total")


def sample_video() -> Path:
    """The bundled real highway clip (Udacity CarND, MIT)."""
    return Path(str(resources.files("fastyolo") / "data" / "highway_clip.mp4"))


class VideoReader:
    """Frames of a video file, looping back to the start when `loop` is set."""

    def __init__(self, path: str | Path, loop: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise FastYoloError(f"video not found: {self.path}")
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise FastYoloError(f"OpenCV cannot open {self.path} as a video (corrupt, or an unsupported codec)")
        self.loop = loop
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 25.0

    def read(self) -> np.ndarray | None:
        ok, frame = self.capture.read()
        if not ok and self.loop:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.capture.read()
        if not ok:
            return None
        return frame

    def close(self) -> None:
        self.capture.release()


@dataclass
class BenchResult:
    frames: int
    seconds: float
    info: dict
    times_ms: dict[str, np.ndarray] = field(repr=False)
    detections: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def percentiles(self) -> dict[str, dict[str, float]]:
        return {
            stage: {f"p{q}": round(float(np.percentile(t, q)), 3) for q in (50, 90, 99)}
            for stage, t in self.times_ms.items()
        }

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
        }

    def table(self) -> str:
        i = self.info
        lines = [
            f"model      {i['model']}" + ("  (untrained weights: timing only)" if i["untrained"] else ""),
            f"backend    {i['backend']} on {i.get('device', 'CPU')}, precision {i['precision']}, threads {i['threads']}",
            f"frames     {self.frames} in {self.seconds:.2f} s: {self.fps:.1f} FPS end to end",
            "",
            f"{'stage':<12}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}",
        ]
        for stage, p in self.percentiles().items():
            lines.append(f"{stage:<12}{p['p50']:>9.3f}{p['p90']:>9.3f}{p['p99']:>9.3f}")
        return "\n".join(lines)


def run_bench(detector: Detector, video: str | Path, frames: int = 300, warmup: int = 10,
              progress: bool = True) -> BenchResult:
    """Run decode -> preprocess -> infer -> postprocess on `frames` frames of `video` (looping it)."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    reader = VideoReader(video)
    pipe = detector.pipeline
    times = np.zeros((len(STAGES), frames))
    found = 0
    try:
        for _ in range(warmup):
            detector.detect(reader.read())
        clock = time.perf_counter
        start = clock()
        for n in tqdm(range(frames), desc="bench", unit="frame", disable=not progress, leave=False):
            t0 = clock()
            frame = reader.read()
            if frame is None:
                raise FastYoloError(f"{video}: no frame could be decoded")
            t1 = clock()
            batch = pipe.preprocess([frame])
            t2 = clock()
            grids = pipe.infer(batch)
            t3 = clock()
            sizes = np.array([[frame.shape[1], frame.shape[0]]], dtype=np.float64)
            found += len(pipe.postprocess(grids, sizes, detector.conf, detector.iou, detector.top_k)[0])
            t4 = clock()
            times[:, n] = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)
        seconds = clock() - start
    finally:
        reader.close()
    times *= 1000.0
    return BenchResult(frames, seconds, detector.info, dict(zip(STAGES, times, strict=True)), found)
