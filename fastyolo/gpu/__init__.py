"""The NVIDIA GPU path: a TensorRT engine, input normalisation and decode + NMS as numba-cuda kernels.

Importing this package needs neither TensorRT nor a GPU; constructing a pipeline or building an
engine without them raises `GpuUnavailableError` in one line.
"""

from fastyolo.gpu.build import build_engine
from fastyolo.gpu.runtime import TensorRTPipeline

__all__ = ["TensorRTPipeline", "build_engine"]
