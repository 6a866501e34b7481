"""int8 quantisation: a real Q/DQ graph with the metadata kept, close to fp32 on real frames, no torch needed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fastyolo import Detector, FastYoloError, ModelError
from fastyolo.layout import INPUT_NAME, describe
from fastyolo.model_file import read_onnx
from fastyolo.quantize import calibration_frames, int8_model_for, nodes_kept_fp32, quantize_int8

CALIB_FRAMES = 4  # enough to exercise calibration; real runs use 64


@pytest.fixture(scope="module")
def calib_dir(kitti_dir: Path) -> Path:
    return kitti_dir / "images"


@pytest.fixture(scope="module")
def int8_r18(untrained_r18: Path, calib_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "r18.int8.onnx"
    return quantize_int8(untrained_r18, out, calib_dir, frames=CALIB_FRAMES, progress=False)


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _weight_is_int8(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """True when the node's weight input comes out of a DequantizeLinear of an int8 initializer."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = _initializers(model)
    weight = producers.get(node.input[1])
    return weight is not None and weight.op_type == "DequantizeLinear" and inits[weight.input[0]].dtype == np.int8


def _largest_int8_weight(model: onnx.ModelProto) -> int:
    """The largest |value| of the int8 weights any Conv reads."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = _initializers(model)
    weights = [inits[producers[n.input[1]].input[0]] for n in model.graph.node
               if n.op_type == "Conv" and _weight_is_int8(model, n)]
    return max(int(np.abs(w.astype(np.int32)).max()) for w in weights)


def test_int8_model_is_qdq_with_per_channel_int8_weights_and_fp32_head(int8_r18: Path, untrained_r18: Path):
    model = onnx.load_model(str(int8_r18))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    # Every conv int8 but the conv head's last (it writes the grid): that one stays fp32.
    assert len(convs) > 10 and all(_weight_is_int8(model, n) for n in convs[:-1]) and not _weight_is_int8(model, convs[-1])
    # Per channel: one scale per output channel of the first conv.
    producers = {o: n for n in model.graph.node for o in n.output}
    dq = producers[convs[0].input[1]]
    inits = _initializers(model)
    assert inits[dq.input[1]].shape == (inits[dq.input[0]].shape[0],)
    # The network's outputs stay float: no Q/DQ after the head's last Conv.
    last_conv = len(ops) - 1 - ops[::-1].index("Conv")
    assert ops[-1] == "Concat" and "QuantizeLinear" not in ops[last_conv:]

    meta = read_onnx(int8_r18).metadata
    source = read_onnx(untrained_r18).metadata
    assert meta["fastyolo.precision"] == "int8"
    for key, value in {**describe(), "fastyolo.backbone": "resnet18", "fastyolo.untrained": "true"}.items():
        assert meta[key] == value == source[key]
    assert meta["fastyolo.int8.calibration"] == f"minmax, {CALIB_FRAMES} frames of images"
    assert meta["fastyolo.int8.fp32_parts"] == "head"


def test_keep_fp32_choices_select_the_right_nodes(int8_r18: Path, untrained_r18: Path):
    fp32 = onnx.load_model(str(untrained_r18))
    head, first = nodes_kept_fp32(fp32, ("head", "first_conv"))
    convs = [n.name for n in fp32.graph.node if n.op_type == "Conv"]
    assert head == convs[-1]  # the conv head's output layer
    assert INPUT_NAME in next(n for n in fp32.graph.node if n.name == first).input
    assert nodes_kept_fp32(fp32, ()) == []
    with pytest.raises(ValueError, match="unknown part"):
        nodes_kept_fp32(fp32, ("tail",))


def test_everything_int8_when_nothing_is_kept(untrained_r18: Path, calib_dir: Path, tmp_path: Path):
    out = quantize_int8(untrained_r18, tmp_path / "all.onnx", calib_dir, frames=2, keep_fp32=(), method="minmax",
                        progress=False)
    model = onnx.load_model(str(out))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(_weight_is_int8(model, n) for n in convs)
    assert read_onnx(out).metadata["fastyolo.int8.fp32_parts"] == "none"
    assert _largest_int8_weight(model) == 127 and read_onnx(out).metadata["fastyolo.int8.weight_bits"] == "8"


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_int8_runs_close_to_fp32_on_real_frames(int8_r18: Path, untrained_r18: Path, kitti_images, backend):
    frames = [cv2.imread(str(p)) for p in kitti_images[-3:]]  # not the calibration frames' neighbours only
    fp32 = Detector(untrained_r18, backend=backend, threads=2)
    int8 = Detector(int8_r18, backend=backend, precision="int8", threads=2)
    assert int8.info["precision"] == "int8"
    a = fp32.pipeline.infer(fp32.pipeline.preprocess(frames)).copy()
    b = int8.pipeline.infer(int8.pipeline.preprocess(frames))
    diff = np.abs(a - b)
    # Outputs are probabilities/relative coordinates in [0, 1]: int8 moves them a little, not a lot.
    assert diff.mean() < 0.01 and diff.max() < 0.1, (diff.mean(), diff.max())
    assert not np.array_equal(a, b)  # it really is another computation


def test_calibration_frames_from_a_video_are_spread(clip_path: Path):
    frames = calibration_frames(clip_path, 5)
    assert len(frames) == 5 and all(f.shape == (540, 960, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[-1])


def test_bad_inputs_fail_with_one_clear_error(int8_r18: Path, untrained_r18: Path, tmp_path: Path, calib_dir: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FastYoloError, match="no images"):
        quantize_int8(untrained_r18, tmp_path / "x.onnx", tmp_path / "empty", progress=False)
    with pytest.raises(FastYoloError, match="neither a folder of images nor a video"):
        quantize_int8(untrained_r18, tmp_path / "x.onnx", tmp_path / "missing", progress=False)
    with pytest.raises(ModelError, match="already int8"):
        quantize_int8(int8_r18, tmp_path / "x.onnx", calib_dir, progress=False)
    with pytest.raises(ValueError, match="unknown calibration method"):
        quantize_int8(untrained_r18, tmp_path / "x.onnx", calib_dir, method="mse", progress=False)
    with pytest.raises(ModelError, match="int8 needs a quantised model"):
        Detector(untrained_r18, precision="int8")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*.tmp"))


def test_int8_model_for_prefers_the_sibling_then_caches(untrained_r18: Path, int8_r18: Path, tmp_path: Path,
                                                        calib_dir: Path, monkeypatch):
    assert int8_model_for(int8_r18) == int8_r18  # already int8
    fp32 = tmp_path / "m.onnx"
    fp32.write_bytes(untrained_r18.read_bytes())
    monkeypatch.setenv("FASTYOLO_CACHE", str(tmp_path / "cache"))
    made = int8_model_for(fp32, calib_dir, frames=2)
    assert made.parent == tmp_path / "cache" and read_onnx(made).precision == "int8"
    before = made.stat().st_mtime_ns
    assert int8_model_for(fp32, calib_dir, frames=2) == made and made.stat().st_mtime_ns == before  # reused
    sibling = tmp_path / "m.int8.onnx"
    sibling.write_bytes(int8_r18.read_bytes())
    assert int8_model_for(fp32, calib_dir, frames=2) == sibling


def test_quantize_command_works_without_torch(untrained_r18: Path, calib_dir: Path, tmp_path: Path):
    out = tmp_path / "cli.int8.onnx"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # a CPU box without the [train] extra
        from fastyolo.cli import main
        sys.exit(main(["quantize", {str(untrained_r18)!r}, "--calib", {str(calib_dir)!r}, "--frames", "2",
                       "--method", "percentile", "--reduce-range", "-o", {str(out)!r}]))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert run.returncode == 0, run.stderr
    assert f"wrote {out}" in run.stdout
    meta = read_onnx(out).metadata
    assert meta["fastyolo.precision"] == "int8" and meta["fastyolo.int8.calibration"].startswith("percentile, 2 frames")
    # --reduce-range: 7-bit weights, which 16-bit sums of u8 x s8 pairs cannot saturate (CPUs without VNNI)
    assert meta["fastyolo.int8.weight_bits"] == "7" and _largest_int8_weight(onnx.load_model(str(out))) <= 64

    bad = subprocess.run([sys.executable, "-m", "fastyolo.cli", "quantize", str(out), "--calib", str(calib_dir)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "already int8" in bad.stderr
