"""The JSON sidecar beside an engine (engine.plan.json): what built it, for which GPU, from which model.

A TensorRT engine runs only on the TensorRT version and GPU architecture that built it; the
sidecar lets the runtime refuse a mismatched engine in one line instead of failing inside
TensorRT, and carries the model's metadata (precision, backbone, untrained) that the plan lacks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastyolo.errors import ModelError
from fastyolo.layout import describe

FORMAT = 1


def sidecar_path(engine: str | os.PathLike) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def engine_info(*, tensorrt_version: str, gpu: str, compute_capability: tuple[int, int], max_batch: int,
                onnx: Path, model_metadata: dict[str, str], workspace_gb: float) -> dict:
    return {
        "fastyolo_engine": FORMAT,
        "tensorrt": str(tensorrt_version),
        "gpu": gpu,
        "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}",
        "max_batch": int(max_batch),
        "workspace_gb": float(workspace_gb),
        "precision": model_metadata.get("fastyolo.precision", "fp32"),
        "onnx": str(onnx),
        "layout": describe(),
        "model_metadata": dict(model_metadata),
    }


def write_sidecar(engine: str | os.PathLike, info: dict) -> Path:
    path = sidecar_path(engine)
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def read_sidecar(engine: str | os.PathLike) -> dict:
    engine = Path(engine)
    path = sidecar_path(engine)
    rebuild = f"rebuild it with 'fastyolo build-engine MODEL.onnx -o {engine}'"
    if not path.is_file():
        raise ModelError(f"{engine} has no {path.name} beside it (not built by fastyolo, or copied alone): {rebuild}")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not readable JSON ({type(exc).__name__}): {rebuild}") from None
    if not isinstance(info, dict) or info.get("fastyolo_engine") != FORMAT:
        raise ModelError(f"{path} is not a fastyolo engine description (format {FORMAT}): {rebuild}")
    return info


def check_compatible(engine: str | os.PathLike, info: dict, tensorrt_version: str,
                     compute_capability: tuple[int, int]) -> None:
    """Raise ModelError (one line, says to rebuild) unless this TensorRT, GPU and layout built `engine`."""
    here_cc = f"{compute_capability[0]}.{compute_capability[1]}"
    source = info.get("onnx") or "MODEL.onnx"
    rebuild = f"rebuild it on this machine with 'fastyolo build-engine {source} -o {engine}'"
    if info.get("tensorrt") != str(tensorrt_version) or info.get("compute_capability") != here_cc:
        raise ModelError(
            f"{engine} was built with TensorRT {info.get('tensorrt')} for compute capability "
            f"{info.get('compute_capability')} ({info.get('gpu')}), this is TensorRT {tensorrt_version} on "
            f"compute capability {here_cc}; engines only run where they were built: {rebuild}"
        )
    layout = info.get("layout", {})
    for key, value in describe().items():
        if layout.get(key) != value:
            raise ModelError(f"{engine} was built for {key}={layout.get(key)!r}, this fastyolo uses {value!r}: {rebuild}")
