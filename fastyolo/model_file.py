"""Reading an exported model's metadata and checking it is a fastyolo model of our layout."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastyolo.errors import ModelError
from fastyolo.layout import INPUT_NAME, OUTPUT_NAME, describe, output_shape


@dataclass(frozen=True)
class ModelFile:
    path: Path
    metadata: dict[str, str]

    @property
    def untrained(self) -> bool:
        return self.metadata.get("fastyolo.untrained") == "true"

    @property
    def precision(self) -> str:
        """The precision the weights were exported in: fp32, fp16 or int8 (Q/DQ)."""
        return self.metadata.get("fastyolo.precision", "fp32")

    @property
    def backbone(self) -> str:
        return self.metadata.get("fastyolo.backbone", "unknown")


def read_onnx(path: str | os.PathLike) -> ModelFile:
    """Open an ONNX file's header; raise ModelError if it is missing, corrupt or not our layout."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path} is not a readable ONNX model (corrupt or truncated?): {type(exc).__name__}") from None
    metadata = {p.key: p.value for p in proto.metadata_props}

    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    outputs = [o.name for o in graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ModelError(
            f"{path} has inputs {inputs} and outputs {outputs}: expected a fastyolo model "
            f"('{INPUT_NAME}' -> '{OUTPUT_NAME}'); export one with 'fastyolo export'"
        )
    dims = [d.dim_value or None for d in graph.output[0].type.tensor_type.shape.dim]
    expected = list(output_shape(1))[1:]
    if dims[1:] != expected:
        raise ModelError(f"{path} outputs shape {dims}, expected (N, {', '.join(map(str, expected))}): not this layout")
    for key, value in describe().items():
        if key in metadata and metadata[key] != value:
            raise ModelError(f"{path} was exported for {key}={metadata[key]!r}, this fastyolo uses {value!r}")
    return ModelFile(path, metadata)
