"""Detector's step methods (raw_outputs, network_input, parallel_runners, decode) equal detect_batch on
real frames, and bench's throughput mode built on them runs uint8-input models too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastyolo import Detector
from fastyolo.bench import run_bench
from fastyolo.fileio import VideoReader
from fastyolo.input_format import convert_to_uint8


@pytest.fixture(scope="module")
def uint8_r18(untrained_r18: Path, tmp_path_factory) -> Path:
    return convert_to_uint8(untrained_r18, tmp_path_factory.mktemp("u8") / "r18.uint8.onnx")


@pytest.fixture(scope="module")
def frames(clip_path: Path) -> list[np.ndarray]:
    with VideoReader(clip_path, loop=False) as reader:
        return [reader.read() for _ in range(4)]


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.scores, y.scores)
        np.testing.assert_array_equal(x.class_ids, y.class_ids)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("model", ["untrained_r18", "uint8_r18"])
def test_steps_equal_detect_batch(model: str, backend: str, frames, request):
    det = Detector(request.getfixturevalue(model), backend=backend, threads=1, conf=0.1)
    expected = det.detect_batch(frames)
    assert sum(len(d) for d in expected) > 0
    sizes = [(f.shape[1], f.shape[0]) for f in frames]
    _same(det.decode(det.raw_outputs(frames), sizes), expected)
    images = det.network_input(frames)
    assert images is not det.network_input(frames)  # a new array per call: safe to keep in flight
    runners, streams = det.parallel_runners(len(frames))
    assert runners and streams >= 1
    for run in runners:
        _same(det.decode(run(images), sizes), expected)
    # conf for one call, as detect_batch takes it
    _same(det.decode(det.raw_outputs(frames), sizes, conf=0.3), det.detect_batch(frames, conf=0.3))
    with pytest.raises(ValueError, match="between 0 and 1"):
        det.decode(det.raw_outputs(frames), sizes, conf=2)


def test_throughput_mode_runs_a_uint8_input_model(uint8_r18: Path, clip_path: Path):
    det = Detector(uint8_r18, threads=1, conf=0.1)
    latency = run_bench(det, clip_path, frames=5, warmup=1, progress=False, keep=True)
    piped = run_bench(det, clip_path, frames=5, warmup=1, progress=False, keep=True, mode="throughput", batch=2)
    assert piped.detections == latency.detections > 0
    _same(piped.outputs, latency.outputs)
