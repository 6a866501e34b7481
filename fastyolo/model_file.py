"""Reading an exported model's metadata and checking it is a fastyolo model of our layout."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastyolo.errors import ModelError
from fastyolo.layout import INPUT_NAME, INPUT_SIZE, OUTPUT_NAME, describe, output_shape


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
    _check_shape(path, "input", graph.input[[i.name for i in graph.input].index(INPUT_NAME)],
                 [3, INPUT_SIZE, INPUT_SIZE])
    _check_shape(path, "output", graph.output[0], list(output_shape(1))[1:])
    _check_metadata(path, metadata)
    return ModelFile(path, metadata)


def _dims(value_info) -> list[int | None]:
    """A graph input/output's shape: ints, None for a symbolic or unknown dimension."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _check_shape(path: Path, what: str, value_info, expected: list[int]) -> None:
    """(N, *expected) with N free or fixed, nothing unknown: a foreign network with our names fails here."""
    dims = _dims(value_info)
    if len(dims) != len(expected) + 1 or dims[1:] != expected:
        shown = "x".join("?" if d is None else str(d) for d in dims) or "unknown"
        raise ModelError(
            f"{path} {what}s shape {shown}, expected (N, {', '.join(map(str, expected))}): not this layout"
            + ("; export one with 'fastyolo export'" if what == "input" else "")
        )


def _check_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Every layout key fastyolo writes must be there and equal: names and shapes alone do not prove the cell order."""
    expected = describe()
    missing = [key for key in expected if key not in metadata]
    if missing:
        raise ModelError(
            f"{path} has no fastyolo metadata ({', '.join(missing[:2])}{' ...' if len(missing) > 2 else ''} missing): "
            "not a model 'fastyolo export' wrote, so its output layout is unknown; export it with 'fastyolo export'"
        )
    for key, value in expected.items():
        if metadata[key] != value:
            raise ModelError(f"{path} was exported for {key}={metadata[key]!r}, this fastyolo uses {value!r}")
