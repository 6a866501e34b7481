"""Latency mode with decode overlapped (issue 13), the prefetch thread, and the other runtimes on uint8 models."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from fastyolo import Detector
from fastyolo.bench import STAGES, run_bench
from fastyolo.fileio import VideoReader
from fastyolo.input_format import convert_to_uint8
from fastyolo.prefetch import Prefetcher, prefetch


@pytest.fixture(scope="module")
def uint8_r18(untrained_r18: Path, tmp_path_factory) -> Path:
    return convert_to_uint8(untrained_r18, tmp_path_factory.mktemp("u8") / "r18.uint8.onnx")


def _same(a, b) -> bool:
    return (np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.class_ids, b.class_ids))


# Frames from the clip's start (run_bench times the first N): the uint8 model (the overlapped pipeline's own input,
# bench --compare's "after") on its first segment and past the cut into the second (frame 183, highway_clip README);
# the float model, the same code path with the host's normalisation, on 60 (the start, the warm-up's
# rewind, the prefetcher's one-ahead queue). The whole clip, twice per model, was the slowest test of the suite.
FRAMES = {"uint8_r18": 190, "untrained_r18": 60}


@pytest.mark.parametrize("model", ["untrained_r18", "uint8_r18"])
def test_overlapped_latency_mode_equals_the_sequential_one_frame_by_frame(model, clip_path: Path, request):
    detector = Detector(request.getfixturevalue(model), backend="onnxruntime", threads=2, conf=0.01)
    with VideoReader(clip_path) as reader:
        assert reader.frame_count > FRAMES[model]
    frames = FRAMES[model]
    series = run_bench(detector, clip_path, frames=frames, warmup=1, progress=False, keep=True, overlap=False)
    ahead = run_bench(detector, clip_path, frames=frames, warmup=1, progress=False, keep=True, overlap=True)
    assert ahead.overlap and not series.overlap
    assert sum(len(d) for d in series.outputs) > 0
    assert all(_same(a, b) for a, b in zip(series.outputs, ahead.outputs, strict=True))
    for result in (series, ahead):
        assert set(result.times_ms) == set(STAGES) and all(len(t) == frames for t in result.times_ms.values())
    np.testing.assert_array_equal(series.times_ms["period"], series.times_ms["total"])  # in series: one and the same
    report = ahead.to_json()
    assert report["overlap"] is True and report["frame_latency_ms"] == report["stages"]["total"]
    assert "fps" in report and "not 1/FPS" in ahead.table()


def test_prefetcher_keeps_order_and_stays_one_ahead():
    produced, lock = [], threading.Lock()
    items = iter(range(20))

    def produce():
        value = next(items, None)
        with lock:
            produced.append(value)
        return value

    with Prefetcher(produce, depth=1) as ahead:
        got = [ahead.get() for _ in range(5)]
        assert got == [0, 1, 2, 3, 4]
        threading.Event().wait(0.2)
        with lock:
            # Exactly one ahead: the 6th starts only once the 5th is taken, and nothing more.
            assert len(produced) == 5 + 1, produced
        assert ahead.get() == 5
        threading.Event().wait(0.2)
        with lock:
            assert len(produced) == 6 + 1, produced
    assert list(x for x, _ in prefetch(range(7), lambda v: v * v)) == list(range(7))
    assert [y for _, y in prefetch(range(4), lambda v: v * v)] == [0, 1, 4, 9]


def test_prefetcher_raises_the_producers_error_and_stops_early():
    def broken():
        raise OSError("camera unplugged")

    with Prefetcher(broken) as ahead, pytest.raises(OSError, match="camera unplugged"):
        ahead.get()
    endless = Prefetcher(lambda: 1)
    assert endless.get() == 1
    endless.close()  # a full queue never blocks close()
    assert not endless._thread.is_alive()


def test_detect_on_a_video_equals_detect_frame_by_frame(uint8_r18: Path, clip_path: Path, tmp_path: Path):
    out = tmp_path / "dets.jsonl"
    run = subprocess.run([sys.executable, "-m", "fastyolo.cli", "detect", str(clip_path), "--model", str(uint8_r18),
                          "--jsonl", str(out), "--conf", "0.01", "--max-frames", "12", "--no-progress",
                          "--backend", "onnxruntime", "--threads", "2"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    detector = Detector(uint8_r18, backend="onnxruntime", threads=2, conf=0.01)
    with VideoReader(clip_path, loop=False) as reader:
        frames = [reader.read() for _ in range(12)]
    assert [r["frame"] for r in rows] == list(range(12))
    for row, frame in zip(rows, frames, strict=True):
        expected = detector.detect(frame)
        assert len(row["detections"]) == len(expected)
        got = np.array([d["box"] for d in row["detections"]]).reshape(-1, 4)
        np.testing.assert_allclose(got, expected.boxes, atol=0.06)  # JSON rounds to 0.1 px


def test_bench_compare_before_after_runs_both_pipelines(untrained_r18: Path, clip_path: Path, tmp_path: Path):
    out = tmp_path / "compare.json"
    run = subprocess.run([sys.executable, "-m", "fastyolo.cli", "bench", "--compare", "--before-after",
                          "--model", str(untrained_r18), "--combos", "onnxruntime:fp32,openvino:fp32",
                          "--frames", "3", "--warmup", "1", "--rounds", "1", "--threads", "2", "--json", str(out),
                          str(clip_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["compare"]["rows"]
    assert [(r["pipeline"], r["backend"]) for r in rows] == [
        ("before", "onnxruntime"), ("before", "openvino"), ("after", "onnxruntime"), ("after", "openvino")]
    assert [(r["overlap"], r["normalize"], r["input"]) for r in rows] == [
        (False, "host", "nchw_float_normalized")] * 2 + [(True, "graph", "nhwc_uint8_bgr")] * 2
    assert all(0.0 <= r["overhead_share"] < 1.0 and "frame_latency_ms" in r for r in rows)
    assert "| pipeline | FPS | network p50 ms | frame p50 ms |" in run.stdout and "(before)" in run.stdout


def test_bench_refuses_before_after_without_compare(untrained_r18: Path):
    run = subprocess.run([sys.executable, "-m", "fastyolo.cli", "bench", "--before-after", "--model",
                          str(untrained_r18)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--compare" in run.stderr


# ---------------------------------------------------------------- the torch engine (TensorRT: test_tensorrt_uint8.py)


def test_torch_engine_on_the_checkpoint_agrees_with_its_uint8_export(tmp_path: Path, kitti_images):
    """Training keeps normalised input: the checkpoint (torch engine, normalising itself) and the exported
    uint8 graph must give the same grid on real frames."""
    torch = pytest.importorskip("torch")
    import cv2
    from fastyolo.train.export import export_onnx
    from fastyolo.train.model import YoloNet

    from fastyolo.input_format import UINT8

    torch.manual_seed(0)
    model = YoloNet("resnet18").eval()
    path = tmp_path / "r18.uint8.onnx"
    assert export_onnx(model, path, untrained=True, input_format=UINT8) < 1e-4
    from fastyolo.gpu.torch_engine import TorchPipeline

    frames = [cv2.imread(str(p)) for p in kitti_images[:3]]
    on_torch = TorchPipeline(model, precision="fp32", device="cpu").raw(frames)
    exported = Detector(path, backend="onnxruntime", threads=2).raw_outputs(frames)
    assert np.abs(on_torch - exported).max() < 1e-4
