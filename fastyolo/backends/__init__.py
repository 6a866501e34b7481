"""CPU inference sessions over an exported ONNX: `run(images) -> grid`, one class per runtime."""

from __future__ import annotations

from fastyolo.backends.base import PRECISIONS, Session
from fastyolo.cfg import CPU_BACKENDS as BACKENDS
from fastyolo.model_file import ModelFile


def open_session(model: ModelFile, backend: str, precision: str, threads: int, *, ppp: bool = False) -> Session:
    """Open `model` on `backend` ("auto" is OpenVINO, measured fastest on the CPU here).

    ppp: a model that takes normalised floats runs behind OpenVINO's PrePostProcessor, taking uint8 pixels.
    """
    if backend == "auto":
        backend = "openvino"
    if backend == "openvino":
        from fastyolo.backends.openvino import OpenVINOSession

        return OpenVINOSession(model, precision, threads, ppp=ppp)
    if ppp:
        raise ValueError("normalize='ppp' is OpenVINO's PrePostProcessor: use backend='openvino', or export the "
                         "model with its normalisation in the graph ('fastyolo export', the default input)")
    if backend == "onnxruntime":
        from fastyolo.backends.onnxruntime import OnnxRuntimeSession

        return OnnxRuntimeSession(model, precision, threads)
    raise ValueError(f"unknown backend {backend!r}: choose auto, {', '.join(BACKENDS)} (or a .plan for TensorRT)")


__all__ = ["BACKENDS", "PRECISIONS", "Session", "open_session"]
