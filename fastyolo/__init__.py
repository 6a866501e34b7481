"""fastyolo: fast YOLO detection of cars, trucks and pedestrians in driving video."""

from fastyolo.detections import Detection, Detections
from fastyolo.detector import Detector
from fastyolo.errors import FastYoloError, FrameError, GpuUnavailableError, MissingDependencyError, ModelError
from fastyolo.layout import CLASS_NAMES

__version__ = "0.1.0"
__all__ = [
    "CLASS_NAMES",
    "Detection",
    "Detections",
    "Detector",
    "FastYoloError",
    "FrameError",
    "GpuUnavailableError",
    "MissingDependencyError",
    "ModelError",
]
