"""The one table of precisions: what each file holds, what makes it, what runs it, what it must agree to.

Like Ultralytics' `export_formats()`: `fastyolo export` takes its `--precision` choices and its
converter from here, the CPU backends their OpenVINO inference-precision hint and what they accept,
the TensorRT and torch runtimes what they accept, `bench --check` (fastyolo.agreement) its targets
and checked rows, and `bench --compare` (fastyolo.compare) its default rows. A new precision is one
row here; nothing else keeps a list.

Leaf module: no imports beyond the standard library, so cfg, the backends and the GPU runtimes can
all read it without cycles. Converters are named "module:function" and imported on use (torch,
onnx and onnxruntime's quantiser are heavy).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

CPU_RUNTIMES = ("onnxruntime", "openvino")  # in the order --compare lists them (its baseline first)
RUNTIMES = (*CPU_RUNTIMES, "tensorrt", "torch")  # torch: a training checkpoint (.pt), cast when it is loaded
RUNTIME_NAMES = {"onnxruntime": "onnxruntime", "openvino": "OpenVINO", "tensorrt": "TensorRT", "torch": "torch"}


@dataclass(frozen=True)
class Precision:
    name: str
    holds: str  # what the model file holds
    # "module:function" that writes this precision's file: export_onnx(model, path) for fp32, else
    # convert(fp32_onnx, out_onnx[, calib]) from an fp32 export; None: no file of its own (a runtime hint).
    converter: str | None
    runtimes: tuple[str, ...]  # the runtimes that can be asked to run it (fastyolo.precisions.RUNTIMES)
    openvino_hint: str | None  # OpenVINO's INFERENCE_PRECISION_HINT when it is asked for; None: not on OpenVINO
    target: float  # bench --check / bench/gpu.py: least mAP@0.5 of its detections against fp32's
    file_precision: str  # the "fastyolo.precision" the ONNX it runs from carries
    needs_calib: bool = False  # the converter calibrates on real frames (--calib)

    def convert(self) -> Callable:
        """The converter function, imported now (ValueError where the precision has none)."""
        if self.converter is None:
            raise ValueError(f"{self.name} has no file of its own: it runs the fp32 model ({self.holds})")
        module, _, function = self.converter.partition(":")
        return getattr(importlib.import_module(module), function)


TABLE: tuple[Precision, ...] = (
    Precision("fp32", "fp32 weights and activations: the export as it is", "fastyolo.train.export:export_onnx",
              ("onnxruntime", "openvino", "tensorrt", "torch"),
              # f32 explicitly: OpenVINO's CPU plugin would otherwise run bf16 silently where the CPU has it
              openvino_hint="f32", target=0.99, file_precision="fp32"),  # 0.99: two runtimes should agree
    Precision("bf16", "the fp32 file; the runtime computes in bfloat16 where the CPU/GPU has it", None,
              ("openvino", "torch"), openvino_hint="bf16", target=0.98, file_precision="fp32"),
    Precision("fp16", "half weights and activations (input and output stay fp32), for TensorRT",
              "fastyolo.fp16:convert_fp16", ("tensorrt", "torch"), openvino_hint=None, target=0.98,
              file_precision="fp16"),
    Precision("int8", "explicit int8 Q/DQ nodes calibrated on real frames (per-channel weights, last Gemm fp32)",
              "fastyolo.quantize:quantize_int8", ("onnxruntime", "openvino", "tensorrt"),
              openvino_hint="f32",  # the Q/DQ nodes say int8; what they leave in float stays f32
              target=0.95, file_precision="int8", needs_calib=True),
)
BY_NAME: dict[str, Precision] = {p.name: p for p in TABLE}
NAMES = tuple(BY_NAME)

# bench --check and --compare measure everything against this: fp32 as exported, on OpenVINO (check) or
# onnxruntime (compare, the plain runtime every row's speed-up is relative to).
CHECK_BASELINE = ("openvino", "fp32")
COMPARE_BASELINE = ("onnxruntime", "fp32")


def get(name: str) -> Precision:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}: choose one of {', '.join(NAMES)}") from None


def for_runtime(*runtimes: str) -> tuple[str, ...]:
    """The precisions any of `runtimes` can be asked to run, in table order."""
    return tuple(p.name for p in TABLE if any(r in p.runtimes for r in runtimes))


def exportable() -> tuple[str, ...]:
    """What `fastyolo export --precision` can write: the precisions with a converter."""
    return tuple(p.name for p in TABLE if p.converter is not None)


def targets() -> dict[str, float]:
    return {p.name: p.target for p in TABLE}


def openvino_hints() -> dict[str, str]:
    return {p.name: p.openvino_hint for p in TABLE if p.openvino_hint is not None}


def cpu_combos() -> tuple[tuple[str, str], ...]:
    """Every (backend, precision) a CPU runtime runs: precisions in table order, onnxruntime first."""
    return tuple((r, p.name) for p in TABLE for r in CPU_RUNTIMES if r in p.runtimes)



def only_on(precision: str, backend: str) -> str | None:
    """Why `backend` cannot run `precision` in one line ("bf16 runs on OpenVINO only: ..."), or None if it can."""
    p = get(precision)
    if backend in p.runtimes:
        return None
    where = [r for r in CPU_RUNTIMES if r in p.runtimes]
    if not where:
        return f"{precision} runs on {' and '.join(RUNTIME_NAMES[r] for r in p.runtimes)} only, not on the CPU"
    return f"{precision} runs on {' and '.join(RUNTIME_NAMES[r] for r in where)} only"
