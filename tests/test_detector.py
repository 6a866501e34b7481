"""Detector on the CPU: backends agree with each other and with torch on real frames; bad input fails clearly."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fastyolo
from fastyolo import Detections, Detector, FrameError, ModelError
from fastyolo.layout import CLASS_NAMES, INPUT_NAME, INPUT_SIZE, OUTPUT_NAME


@pytest.fixture(scope="module")
def frames(kitti_images) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in kitti_images[:6]]


@pytest.fixture(scope="module")
def detectors(untrained_r18):
    return {
        "openvino": Detector(untrained_r18, conf=0.05, threads=2),
        "onnxruntime": Detector(untrained_r18, backend="onnxruntime", conf=0.05, threads=2),
    }


def test_backends_agree_with_torch_on_real_frames(detectors, frames, untrained_r18):
    torch = pytest.importorskip("torch")
    from fastyolo.preprocess import preprocess
    from fastyolo.reference_model import untrained_network

    model = untrained_network("resnet18")  # the weights of the exported file
    batch = preprocess(frames)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    for name, det in detectors.items():
        got = det.pipeline.infer(det.pipeline.preprocess(frames))
        np.testing.assert_allclose(got, expected, atol=2e-4, err_msg=name)


def test_backends_give_the_same_detections(detectors, frames):
    ov = detectors["openvino"].detect_batch(frames)
    ort = detectors["onnxruntime"].detect_batch(frames)
    for a, b, frame in zip(ov, ort, frames, strict=True):
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)  # pixels
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        h, w = frame.shape[:2]
        assert (a.boxes[:, [0, 2]] >= 0).all() and (a.boxes[:, [0, 2]] <= w).all()
        assert (a.boxes[:, [1, 3]] >= 0).all() and (a.boxes[:, [1, 3]] <= h).all()


def test_detections_api(detectors, frames):
    det = detectors["openvino"].detect(frames[0])
    assert isinstance(det, Detections)
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (len(det), 4)
    assert det.scores.dtype == np.float32 and det.class_ids.dtype == np.int32
    assert (np.diff(det.scores) <= 0).all()  # best first
    assert (det.scores >= 0.05).all()
    items = list(det)
    assert len(items) == len(det)
    assert [d.label for d in items] == det.labels and set(det.labels) <= set(CLASS_NAMES)
    assert items[0].box == tuple(float(v) for v in det.boxes[0])


def test_batch_equals_single_frames(detectors, frames):
    det = detectors["onnxruntime"]
    batch = det.detect_batch(frames[:3])
    for frame, b in zip(frames[:3], batch, strict=True):
        single = det.detect(frame)
        np.testing.assert_array_equal(single.class_ids, b.class_ids)
        np.testing.assert_allclose(single.boxes, b.boxes, atol=1e-2)


def test_any_frame_size_maps_back_to_its_pixels(clip_path):
    """The same picture at twice the size gives boxes at twice the coordinates (the packaged trained
    model on a clip frame with cars: an untrained net's near-equal scores make its boxes unstable)."""
    from fastyolo import Detector

    cap = cv2.VideoCapture(str(clip_path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 430)
    small = cap.read()[1]
    cap.release()
    det = Detector(backend="onnxruntime", conf=0.3, threads=2)
    big = cv2.resize(small, (small.shape[1] * 2, small.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    a, b = det.detect(small), det.detect(big)
    assert len(a) > 0 and len(b) == len(a)
    for box in a.boxes * 2:  # INTER_LINEAR to 224 of a 2x nearest-upscaled frame: close, not identical input
        assert np.abs(b.boxes - box).max(axis=1).min() <= 0.02 * big.shape[1], box


def test_info_reports_what_runs(detectors, untrained_r18):
    info = detectors["openvino"].info
    assert info["backend"] == "openvino" and info["precision"] == "fp32" and info["threads"] == 2
    assert info["input_size"] == INPUT_SIZE and info["model"] == str(untrained_r18) and info["untrained"] is True
    assert detectors["onnxruntime"].info["backend"] == "onnxruntime"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (None, "frame is None"),
        (np.zeros((100, 100), np.uint8), "grayscale"),
        (np.zeros((100, 100, 4), np.uint8), "RGBA"),
        (np.zeros((100, 100, 3), np.float32), "dtype is float32"),
        (np.zeros((0, 100, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "frame is a list"),
    ],
)
def test_bad_frames_are_named(detectors, frame, message):
    with pytest.raises(FrameError, match=message):
        detectors["openvino"].detect(frame)


def test_missing_model(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        Detector(tmp_path / "nope.onnx")


def test_corrupt_model(tmp_path, untrained_r18):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(untrained_r18.read_bytes()[:5000])  # a truncated download
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        Detector(bad)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError):
        Detector(junk)


def _onnx_with_output(path, output_name: str, dims: list) -> None:
    out = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, dims)
    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])
    value = helper.make_tensor("v", TensorProto.FLOAT, [1, *dims[1:]], np.zeros(int(np.prod(dims[1:]))).tolist())
    node = helper.make_node("Constant", [], [output_name], value=value)
    onnx.save(helper.make_model(helper.make_graph([node], "g", [inp], [out])), str(path))


def test_model_of_another_layout(tmp_path):
    path = tmp_path / "yolo20.onnx"
    _onnx_with_output(path, OUTPUT_NAME, [1, 7, 7, 30])
    with pytest.raises(ModelError, match="outputs shape .* not this layout"):
        Detector(path)
    other = tmp_path / "other.onnx"
    _onnx_with_output(other, "logits", [1, 1000])
    with pytest.raises(ModelError, match="expected a fastyolo model"):
        Detector(other)


def test_bad_arguments(untrained_r18):
    with pytest.raises(ValueError, match="unknown backend"):
        Detector(untrained_r18, backend="tflite")
    with pytest.raises(ValueError, match="thresholds"):
        Detector(untrained_r18, conf=1.5)
    with pytest.raises(ModelError, match="int8 needs a quantised model"):
        Detector(untrained_r18, precision="int8")


def test_inference_does_not_need_torch(untrained_r18, kitti_images):
    """A CPU-only laptop without torch: block the import and run the whole path."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any 'import torch' now raises ImportError
        import cv2, fastyolo
        det = fastyolo.Detector({str(untrained_r18)!r}, conf=0.05)
        print(len(det.detect(cv2.imread({str(kitti_images[0])!r}))))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.strip()) > 0


def test_public_api():
    assert fastyolo.CLASS_NAMES == ("Car", "Truck", "Pedestrian")
    assert callable(fastyolo.Detector)


def test_non_finite_model_output_is_an_error_not_missing_boxes(detectors, frames):
    """A broken model (NaN weights) must be named, not turned into 'no detections'."""
    det = detectors["onnxruntime"]
    grids = det.pipeline.infer(det.pipeline.preprocess(frames[:1]))
    grids[0, 3, 4, 0] = np.nan
    sizes = np.array([[frames[0].shape[1], frames[0].shape[0]]], np.float64)
    with pytest.raises(ModelError, match="NaN or infinite"):
        det.pipeline.postprocess(grids, sizes, 0.05, 0.45, 100)
