"""Reading an exported model's metadata and checking it is a fastyolo model of our layout."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastyolo.errors import ModelError
from fastyolo.input_format import FORMATS, UINT8, format_of, input_shape
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
    def input_format(self) -> str:
        """What the input holds (fastyolo.input_format): NORMALIZED floats, or UINT8 BGR pixels."""
        from fastyolo.input_format import format_of

        return format_of(self.metadata)

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
    fmt = _check_format(path, metadata)
    source = graph.input[[i.name for i in graph.input].index(INPUT_NAME)]
    _check_shape(path, "input", source, input_shape(fmt, 1)[1:])
    expected_type = onnx.TensorProto.UINT8 if fmt == UINT8 else onnx.TensorProto.FLOAT
    if source.type.tensor_type.elem_type != expected_type:
        raise ModelError(f"{path} input '{INPUT_NAME}' has element type {source.type.tensor_type.elem_type}, but its "
                         f"metadata says {fmt}: a broken export; export it again with 'fastyolo export'")
    _check_shape(path, "output", graph.output[0], list(output_shape(1))[1:])
    _check_metadata(path, metadata)
    return ModelFile(path, metadata)


def _check_format(path: Path, metadata: dict[str, str]) -> str:
    fmt = format_of(metadata)
    if fmt not in FORMATS:
        raise ModelError(f"{path} expects input {fmt!r}, which this fastyolo does not know ({', '.join(FORMATS)}): "
                         "upgrade fastyolo or export the model again")
    return fmt


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
