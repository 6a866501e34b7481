"""Hostile inputs that reach an output: a model that lies about its output shape (issue 21, item 4) and
file names that a spreadsheet would run as formulas in `detect --csv` (item 3)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from fastyolo.cli import main
from fastyolo.errors import ModelError
from fastyolo.layout import CELL_SIZE, GRID, INPUT_NAME, INPUT_SIZE, OUTPUT_NAME, describe


def lying_onnx(path: Path, cells: int = CELL_SIZE - 1) -> Path:
    """A model whose header says images (N, 3, 224, 224) -> grid (N, 11, 11, 13), with fastyolo's metadata,
    but whose graph slices its output to (N, 11, 11, `cells`): confident values everywhere, so a decode that
    trusted the header would find boxes (reading 13 values per cell out of 12, then past the buffer)."""
    import onnx
    from onnx import TensorProto, helper

    images = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])
    grid = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", GRID, GRID, CELL_SIZE])  # the lie
    full = np.full((1, GRID, GRID, CELL_SIZE), 0.9, np.float32)
    consts = [
        helper.make_tensor("full", TensorProto.FLOAT, full.shape, full.ravel().tolist()),
        helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [cells]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [3]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    nodes = [
        helper.make_node("Slice", ["full", "starts", "ends", "axes"], ["sliced"]),
        # (N, 1, 1, 1) zeros from the input, so the output's batch follows the input's
        helper.make_node("ReduceMean", [INPUT_NAME], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Transpose", ["nothing"], ["batch"], perm=[0, 2, 3, 1]),
        helper.make_node("Add", ["batch", "sliced"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(nodes, "liar", [images], [grid], initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in describe().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def liar(tmp_path_factory) -> Path:
    return lying_onnx(tmp_path_factory.mktemp("liar") / "liar.onnx")


@pytest.fixture(scope="module")
def frame(kitti_images) -> np.ndarray:
    import cv2

    return cv2.imread(str(kitti_images[0]))


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_a_model_that_lies_about_its_output_shape_is_refused(liar, frame, backend):
    from fastyolo import Detector

    with pytest.raises(ModelError) as caught:
        Detector(liar, backend=backend, threads=1).detect(frame)
    message = str(caught.value)
    assert "\n" not in message and "11x11x12" in message and "11x11x13" in message, message


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_detect_cli_refuses_the_lying_model_in_one_line(liar, kitti_images, backend, capsys):
    rc = main(["detect", str(kitti_images[0]), "--model", str(liar), "--backend", backend, "--threads", "1",
               "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""  # no detection line was written from the garbage
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "11x11x12" in lines[0], captured.err


def test_every_runtime_output_is_checked_before_decoding(liar, frame):
    """The decode step itself refuses a grid of the wrong shape or dtype (throughput runners, agreement checks and
    the bench feed it outputs the Detector did not produce), and a good grid still decodes."""
    from fastyolo import Detector

    good = lying_onnx(liar.parent / "honest.onnx", cells=CELL_SIZE)
    detector = Detector(good, backend="onnxruntime", threads=1)
    grids = detector.raw_outputs([frame])
    assert grids.shape == (1, GRID, GRID, CELL_SIZE)
    assert len(detector.decode(grids, [(frame.shape[1], frame.shape[0])])) == 1
    sizes = [(frame.shape[1], frame.shape[0])]
    for bad in (grids[..., :-1], grids.astype(np.float64), grids.reshape(1, -1), np.concatenate([grids, grids])):
        with pytest.raises(ModelError):
            detector.decode(bad, sizes)


def test_torch_engine_refuses_a_network_of_another_output_shape():
    torch = pytest.importorskip("torch")
    from fastyolo.gpu.torch_engine import TorchPipeline

    class Wrong(torch.nn.Module):
        def forward(self, x):  # 12 values per cell: the same batch, one value short
            return torch.zeros(x.shape[0], GRID, GRID, CELL_SIZE - 1) + x.mean() * 0

    pipe = TorchPipeline(Wrong(), precision="fp32", device="cpu", max_batch=1, cuda_graph=False)
    image = np.zeros((100, 120, 3), np.uint8)
    with pytest.raises(ModelError, match="11x11x12"):
        pipe.postprocess(pipe.infer(pipe.preprocess([image])), np.array([[120.0, 100.0]]), 0.25, 0.45, 10)


def test_tensorrt_refuses_an_engine_whose_output_is_not_the_layout(liar, tmp_path, monkeypatch):
    """TensorRT computes its tensors' shapes itself, so an engine built from the lying ONNX says (-1, 11, 11, 12):
    the pipeline's check of the engine's I/O refuses it before any buffer is bound (test double, no GPU here)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    from tensorrt_double import FakeEngine, FakeTensorRT, QueuedHostDevice

    from fastyolo.gpu.build import build_engine
    from fastyolo.gpu.runtime import TensorRTPipeline

    device = QueuedHostDevice()
    trt = FakeTensorRT(device=device)
    plan = tmp_path / "liar.plan"
    build_engine(liar, plan, tensorrt=trt, device=device)
    real = FakeEngine.get_tensor_shape
    monkeypatch.setattr(FakeEngine, "get_tensor_shape",
                        lambda self, name: real(self, name) if name != OUTPUT_NAME else (-1, GRID, GRID, CELL_SIZE - 1))
    with pytest.raises(ModelError, match="expected"):
        TensorRTPipeline(plan, tensorrt=trt, device=device)


# ------------------------------------------------------------------------------ CSV formula injection


HOSTILE = ['=HYPERLINK("evil.example","x").jpg', "+SUM(1,2).jpg", "-2+3.jpg", "@SUM(A1).jpg"]


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path):
    from fastyolo.detections import Detections
    from fastyolo.writers import CsvSink

    dets = Detections(np.array([[-3.5, 1, 20, 30]], np.float32), np.array([0.9], np.float32), np.array([0], np.int32))
    out = tmp_path / "d.csv"
    with CsvSink(out) as sink:
        for i, name in enumerate([*HOSTILE, "\tTAB.jpg", "\rCR.jpg", "plain.jpg", "a/=b.jpg"]):
            sink.write(i, dets, name)
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    sources = [r["source"] for r in rows]
    assert sources == [f"'{name}" for name in HOSTILE] + ["'\tTAB.jpg", "'\rCR.jpg", "plain.jpg", "a/=b.jpg"]
    assert all(r["x1"] == "-3.50" for r in rows)  # numbers stay numbers, a negative one too
    assert {r["label"] for r in rows} == {"Car"}


def test_detect_csv_of_hostile_file_names(tmp_path, untrained_r18, kitti_images, capsys):
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in HOSTILE:
        shutil.copy(kitti_images[0], folder / name)
    out = tmp_path / "d.csv"
    rc = main(["detect", str(folder), "--model", str(untrained_r18), "--csv", str(out), "--conf", "0.01",
               "--threads", "1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert rows and {r["source"] for r in rows} == {f"'{name}" for name in HOSTILE}
    assert not any(r[column][:1] in "=+-@" for r in rows for column in ("source", "label"))
