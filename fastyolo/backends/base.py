from __future__ import annotations

from typing import Protocol

import numpy as np

from fastyolo import precisions
from fastyolo.cfg import PRECISIONS  # the names live in fastyolo.precisions


class Session(Protocol):
    name: str  # backend name
    precision: str  # what actually runs, as reported by the runtime
    input_format: str  # what run() takes (fastyolo.input_format): normalised floats or uint8 BGR pixels

    def run(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 normalised or (N, H, W, 3) uint8 BGR -> (N, S, S, CELL_SIZE) float32."""
        ...


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, as a container or taskset limits it)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def wrong_output(model: object, shape: tuple, dtype: object, frames: int) -> Exception:
    """The ModelError for a model whose output is not (frames, S, S, CELL_SIZE) float32, whatever its header declares."""
    from fastyolo.errors import ModelError
    from fastyolo.layout import output_shape

    def dims(t: tuple) -> str:
        return "x".join(map(str, t)) or "a scalar"

    return ModelError(f"{model} outputs {dims(shape)} {dtype} for {frames} frame(s), not the {dims(output_shape(frames))} "
                      "float32 of fastyolo's layout, whatever its header declares: a broken or forged model; "
                      "export it again with 'fastyolo export'")


def check_precision(model_precision: str, requested: str, backend: str) -> None:
    from fastyolo.errors import ModelError

    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    why = precisions.only_on(requested, backend)
    if why:  # e.g. bf16 on onnxruntime
        other = next(b for b in precisions.CPU_RUNTIMES if b != backend)
        raise ValueError(f"{why}: use backend={other!r} (or precision='fp32')")
    if requested == "int8" and model_precision != "int8":
        raise ModelError(
            "int8 needs a quantised model: 'fastyolo quantize MODEL.onnx --calib DIR' "
            "(or 'fastyolo export CHECKPOINT --precision int8 --calib DIR')"
        )
    if model_precision == "int8" and requested not in ("int8", "fp32"):
        raise ModelError(f"this model is int8 (Q/DQ); run it with precision='int8', not {requested!r}")
