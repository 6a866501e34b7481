"""fastyolo: fast YOLO detection of cars, trucks and pedestrians in driving video."""

from fastyolo import numba_cache

NUMBA_CACHE = numba_cache.configure()  # before the kernels are imported: never fails the import

from fastyolo import datasets  # noqa: E402  (torch-free: fastyolo.datasets.load_dataset after a plain import)
from fastyolo.detections import Detection, Detections  # noqa: E402
from fastyolo.detector import Detector  # noqa: E402
from fastyolo.errors import FastYoloError, FrameError, GpuUnavailableError, MissingDependencyError, ModelError  # noqa: E402
from fastyolo.layout import CLASS_NAMES  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "CLASS_NAMES",
    "datasets",
    "Detection",
    "Detections",
    "Detector",
    "FastYoloError",
    "FrameError",
    "GpuUnavailableError",
    "MissingDependencyError",
    "ModelError",
]
