"""fp16 ONNX for strongly typed TensorRT: half weights and activations, fp32 head tail and I/O, close to fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastyolo.errors import ModelError
from fastyolo.layout import OUTPUT_NAME


@pytest.fixture(scope="module")
def fp16_model(untrained_r18, tmp_path_factory) -> tuple[Path, float]:
    from fastyolo.fp16 import convert_fp16

    dst = tmp_path_factory.mktemp("fp16") / "model-fp16.onnx"
    return dst, convert_fp16(untrained_r18, dst, verbose=False)


def _types(path: Path) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    graph = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}


def test_weights_and_activations_are_half_but_head_and_io_fp32(fp16_model, untrained_r18):
    import onnx
    from onnx import TensorProto

    from fastyolo.model_file import read_onnx

    path, _ = fp16_model
    model = read_onnx(path)  # still a valid fastyolo model for every runtime
    assert model.precision == "fp16"
    assert model.metadata["fastyolo.backbone"] == read_onnx(untrained_r18).metadata["fastyolo.backbone"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)  # includes topological order, which TensorRT's parser needs
    types = _types(path)
    assert types["images"] == TensorProto.FLOAT and types[OUTPUT_NAME] == TensorProto.FLOAT
    weights = [t for t in proto.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights)
    nodes = {n.op_type: n for n in proto.graph.node}
    for op in ("Conv", "Gemm"):  # the conv head has no Gemm; an fc-head model has both
        if op in nodes:
            assert types[nodes[op].output[0]] == TensorProto.FLOAT16, op
    for op in ("Softmax", "Sigmoid", "Concat"):
        assert types[nodes[op].output[0]] == TensorProto.FLOAT, op
    # the output comes straight from the fp32 Concat: no round trip through half on the way out
    producer = {o: n for n in proto.graph.node for o in n.output}
    assert producer[OUTPUT_NAME].op_type == "Concat"
    assert all(types[i] == TensorProto.FLOAT for i in producer[OUTPUT_NAME].input)


def test_fp16_close_to_fp32_on_real_frames(fp16_model, untrained_r18, kitti_images):
    import cv2

    from fastyolo import Detector
    from fastyolo.fp16 import FP16_TOLERANCE, compare_outputs

    path, clip_diff = fp16_model
    frames = [cv2.imread(str(p)) for p in kitti_images[:8]]
    diff = compare_outputs(untrained_r18, path, frames)
    assert 0.0 < diff < FP16_TOLERANCE  # really half (not a copy), and close
    assert 0.0 < clip_diff < FP16_TOLERANCE
    half = Detector(path, backend="onnxruntime", conf=0.3)
    full = Detector(untrained_r18, backend="onnxruntime", conf=0.3)
    assert half.info["precision"] == "fp16"
    grids_half = half.pipeline.infer(half.pipeline.preprocess(frames[:2]))
    grids_full = full.pipeline.infer(full.pipeline.preprocess(frames[:2]))
    np.testing.assert_allclose(grids_half, grids_full, atol=FP16_TOLERANCE)


def test_only_fp32_models_convert(fp16_model, tmp_path):
    from fastyolo.fp16 import convert_fp16

    with pytest.raises(ModelError, match="is fp16; convert the fp32 export"):
        convert_fp16(fp16_model[0], tmp_path / "again.onnx", verbose=False)
    assert not (tmp_path / "again.onnx").exists()


def test_export_cli_writes_fp16(tmp_path, capsys):
    pytest.importorskip("torch", reason="exporting needs the [train] extra (torch)")
    from fastyolo.cli import main as cli

    out = tmp_path / "r18-fp16.onnx"
    # In-process (the CLI's own main): a child process would add only an interpreter and torch's import.
    assert cli(["export", "--untrained", "--backbone", "resnet18", "--precision", "fp16", "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "max abs diff vs fp32" in stdout and f"wrote {out} (fp16)" in stdout
    from fastyolo.model_file import read_onnx

    assert read_onnx(out).precision == "fp16"
