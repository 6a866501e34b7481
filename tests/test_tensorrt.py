"""The TensorRT glue: engine building on the TensorRT 10 and 11 API shapes, engine/GPU mismatch refusal,
one-line errors without a GPU, and the whole runtime end to end on a CPU.

There is no GPU here: tests/tensorrt_double.py stands in for TensorRT (running the real ONNX with
onnxruntime) and for device memory (host arrays, queued streams). The end-to-end tests run the
real decode + NMS kernel in numba's CUDA simulator, which must be chosen before numba.cuda is
imported, so they run in a child pytest process started by `test_runtime_under_simulator`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastyolo.errors import GpuUnavailableError, ModelError
from fastyolo.layout import INPUT_NAME, INPUT_SIZE, describe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tensorrt_double import FakeTensorRT, QueuedHostDevice  # noqa: E402

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
ROOT = Path(__file__).resolve().parents[1]
in_simulator = pytest.mark.skipif(not SIMULATED, reason="runs in the CUDA-simulator child process")
outside_simulator = pytest.mark.skipif(SIMULATED, reason="runs in the parent process")
VERSIONS = ["10.8.0.43", "11.1.0.7"]


def _gpu_stack_present() -> bool:
    from fastyolo.gpu.availability import gpu_problem

    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return gpu_problem() is None


no_gpu_here = pytest.mark.skipif(_gpu_stack_present(), reason="TensorRT and a GPU are present: nothing is missing")


@pytest.fixture(scope="module")
def onnx_model(request) -> Path:
    """The untrained ResNet-18 ONNX (exported by the parent process, handed to the simulator child)."""
    path = os.environ.get("FASTYOLO_TEST_ONNX")
    if path:
        return Path(path)
    return request.getfixturevalue("untrained_r18")


def _build(onnx: Path, tmp_path: Path, version: str, device=None, **kw):
    from fastyolo.gpu import build_engine

    trt = FakeTensorRT(version, device or QueuedHostDevice())
    plan = tmp_path / f"model-{version}.plan"
    info = build_engine(onnx, plan, tensorrt=trt, device=trt.device, **kw)
    return trt, plan, info


# ---------------------------------------------------------------- builder, both API shapes


@outside_simulator
@pytest.mark.parametrize("version", VERSIONS)
def test_build_engine_on_both_api_shapes(onnx_model, tmp_path, version):
    trt, plan, info = _build(onnx_model, tmp_path, version, max_batch=4, workspace_gb=0.5)
    builder = trt.builders[-1]
    if version.startswith("11"):
        assert builder.network.flags == 0  # strong typing is always on; no EXPLICIT_BATCH in 11
        assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.BuilderFlag, "INT8")
    else:
        assert builder.network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert builder.config.flags == []  # precision comes from the ONNX, never from builder flags
    assert builder.config.pools[trt.MemoryPoolType.WORKSPACE] == int(0.5 * (1 << 30))
    shape = (3, INPUT_SIZE, INPUT_SIZE)
    assert builder.config.profiles[0].shapes[INPUT_NAME] == ((1, *shape), (1, *shape), (4, *shape))
    assert plan.is_file() and plan.stat().st_size > onnx_model.stat().st_size
    sidecar = json.loads(plan.with_name(plan.name + ".json").read_text())
    assert sidecar == info
    assert sidecar["tensorrt"] == version and sidecar["compute_capability"] == "8.6"
    assert sidecar["layout"] == describe() and sidecar["max_batch"] == 4
    assert sidecar["precision"] == "fp32" and sidecar["model_metadata"]["fastyolo.untrained"] == "true"
    assert sidecar["onnx"] == str(onnx_model.resolve())


@outside_simulator
def test_mismatched_engine_is_refused_in_one_line(onnx_model, tmp_path):
    from fastyolo.gpu import TensorRTPipeline

    _, plan, _ = _build(onnx_model, tmp_path, "10.8.0.43")
    other_version = FakeTensorRT("10.9.0.34", QueuedHostDevice())
    with pytest.raises(ModelError, match="TensorRT 10.8.0.43.*this is TensorRT 10.9.0.34.*rebuild") as err:
        TensorRTPipeline(plan, tensorrt=other_version, device=other_version.device)
    assert "\n" not in str(err.value)
    other_gpu = FakeTensorRT("10.8.0.43", QueuedHostDevice(compute_capability=(8, 9)))
    with pytest.raises(ModelError, match="compute capability 8.6.*compute capability 8.9.*build-engine") as err:
        TensorRTPipeline(plan, tensorrt=other_gpu, device=other_gpu.device)
    assert "\n" not in str(err.value)

    plan.with_name(plan.name + ".json").unlink()
    same = FakeTensorRT("10.8.0.43", QueuedHostDevice())
    with pytest.raises(ModelError, match="no model-10.8.0.43.plan.json beside it.*build-engine"):
        TensorRTPipeline(plan, tensorrt=same, device=same.device)


@outside_simulator
def test_engine_precision_is_fixed_at_build_time(onnx_model, tmp_path):
    from fastyolo.gpu import TensorRTPipeline

    trt, plan, _ = _build(onnx_model, tmp_path, "11.1.0.7")
    with pytest.raises(ModelError, match="is an fp32 engine.*--precision int8"):
        TensorRTPipeline(plan, precision="int8", tensorrt=trt, device=trt.device)
    with pytest.raises(ValueError, match="unknown precision 'bf16'"):
        TensorRTPipeline(plan, precision="bf16", tensorrt=trt, device=trt.device)


# ---------------------------------------------------------------- no TensorRT / no GPU: one line


@outside_simulator
def test_import_needs_neither_tensorrt_nor_a_gpu():
    code = "import sys, fastyolo.gpu; print('tensorrt' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["False", "False"]


@outside_simulator
@no_gpu_here
def test_detector_on_engine_without_gpu_says_what_is_missing(tmp_path):
    import fastyolo

    plan = tmp_path / "x.plan"
    plan.write_bytes(b"not an engine")
    with pytest.raises(GpuUnavailableError) as err:
        fastyolo.Detector(plan)
    message = str(err.value)
    assert "\n" not in message
    assert "fastyolo[gpu]" in message and ".onnx" in message
    assert "TensorRT" in message or "GPU" in message


@outside_simulator
@no_gpu_here
def test_cli_build_engine_without_gpu_stops_in_one_line(onnx_model, tmp_path):
    plan = tmp_path / "x.plan"
    proc = subprocess.run(
        [sys.executable, "-m", "fastyolo.cli", "build-engine", str(onnx_model), "-o", str(plan), "--batch", "4"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastyolo build-engine: error:"), proc.stderr
    assert "fastyolo[gpu]" in lines[0] and "Traceback" not in proc.stderr
    assert not plan.exists()


@outside_simulator
@no_gpu_here
def test_gpu_bench_stops_in_one_line(onnx_model):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), str(onnx_model)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench/gpu.py: error:") and "fastyolo[gpu]" in lines[0]


@outside_simulator
def test_cli_build_engine_rejects_a_non_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    proc = subprocess.run([sys.executable, "-m", "fastyolo.cli", "build-engine", str(bad), "-o", str(tmp_path / "x.plan")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "not a readable ONNX model" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- end to end, in the simulator


@outside_simulator
def test_runtime_under_simulator(onnx_model, kitti_images):
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "FASTYOLO_TEST_ONNX": str(onnx_model)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-x", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def _frames(kitti_images, n):
    import cv2

    return [cv2.imread(str(p)) for p in kitti_images[:n]]


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.class_ids, w.class_ids)
        np.testing.assert_array_equal(g.scores, w.scores)
        np.testing.assert_array_equal(g.boxes, w.boxes)


CONF, IOU, TOP_K = 0.3, 0.45, 100  # an untrained network scores up to ~0.5


@in_simulator
@pytest.mark.parametrize("version", VERSIONS)
def test_detector_on_engine_matches_cpu_detector(onnx_model, kitti_images, tmp_path, monkeypatch, version):
    import functools

    import fastyolo.gpu
    from fastyolo import Detector

    trt, plan, _ = _build(onnx_model, tmp_path, version, max_batch=2)
    monkeypatch.setattr(fastyolo.gpu, "TensorRTPipeline",
                        functools.partial(fastyolo.gpu.TensorRTPipeline, tensorrt=trt, device=trt.device))
    gpu = Detector(plan, conf=CONF, iou=IOU, top_k=TOP_K)
    cpu = Detector(onnx_model, backend="onnxruntime", conf=CONF, iou=IOU, top_k=TOP_K)
    assert gpu.info["backend"] == "tensorrt" and gpu.info["device"] == trt.device.name
    assert gpu.info["precision"] == "fp32" and gpu.info["untrained"] is True

    frames = _frames(kitti_images, 3)
    want = cpu.detect_batch(frames)
    assert sum(len(d) for d in want) > 0  # the comparison is not vacuous
    _assert_same(gpu.detect_batch(frames[:2]), want[:2])
    _assert_same([gpu.detect(frames[2])], want[2:])
    small = frames[0][:50, :70].copy()  # another frame size: boxes scale to each frame
    _assert_same([gpu.detect(small)], [cpu.detect(small)])

    pipe = gpu.pipeline
    assert pipe.use_graphs and gpu.info["cuda_graph"] is True
    # a graph per (batch, thresholds) on its own context: batch 2, then batch 1 (two calls share it)
    assert pipe.graph_captures == 2 and [g.replays for g in trt.device.graphs] == [1, 2]
    assert sorted(pipe._contexts) == [1, 2]
    for context in pipe._contexts.values():
        assert set(context.addresses) == {"images", "grid"}
    with pytest.raises(ValueError, match="at most 2.*--batch 3"):
        gpu.detect_batch(frames)


@in_simulator
def test_graph_replay_is_one_launch_per_call(onnx_model, kitti_images, tmp_path):
    from fastyolo.gpu import TensorRTPipeline

    trt, plan, _ = _build(onnx_model, tmp_path, "11.1.0.7", max_batch=2)
    device = trt.device
    graphed = TensorRTPipeline(plan, tensorrt=trt, device=device)
    eager = TensorRTPipeline(plan, tensorrt=trt, device=device, cuda_graph=False)
    assert graphed.use_graphs and not eager.use_graphs
    frames = _frames(kitti_images, 2)

    def call(pipe, batch, conf=CONF):
        sizes = np.array([(f.shape[1], f.shape[0]) for f in batch], np.float64)
        return pipe.postprocess(pipe.infer(pipe.preprocess(batch)), sizes, conf, IOU, TOP_K)

    _assert_same(call(graphed, frames), call(eager, frames))  # first call: warm-up, capture, replay
    captured = [label for kind, label in device.log if kind == "capture"]
    assert captured == ["h2d", "normalize", "execute", "h2d", "h2d", "decode_nms", "d2h"]
    device.log.clear()
    small = [frames[1][:60, :90].copy(), frames[0]]  # new pixels and sizes, read from the pinned buffers at replay
    got = call(graphed, small)
    assert [kind for kind, _ in device.log if kind != "run"] == ["enqueue"] * 7 + ["sync"]  # one replay, one wait
    _assert_same(got, call(eager, small))
    _assert_same(call(graphed, small, conf=0.5), call(eager, small, conf=0.5))  # thresholds: another graph
    assert graphed.graph_captures == 2 and [g.replays for g in device.graphs] == [2, 1]


@in_simulator
def test_failed_capture_runs_eagerly(onnx_model, kitti_images, tmp_path, monkeypatch):
    from fastyolo.gpu import TensorRTPipeline

    trt, plan, _ = _build(onnx_model, tmp_path, "10.8.0.43")
    pipe = TensorRTPipeline(plan, tensorrt=trt, device=trt.device)
    eager = TensorRTPipeline(plan, tensorrt=trt, device=trt.device, cuda_graph=False)

    def refuse(stream, queue):
        raise RuntimeError("CUDA driver error CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED")

    monkeypatch.setattr(trt.device, "capture_graph", refuse)
    frame = _frames(kitti_images, 1)[0]
    sizes = np.array([[frame.shape[1], frame.shape[0]]], np.float64)
    got = pipe.postprocess(pipe.infer(pipe.preprocess([frame])), sizes, CONF, IOU, TOP_K)
    _assert_same(got, eager.postprocess(eager.infer(eager.preprocess([frame])), sizes, CONF, IOU, TOP_K))
    assert not pipe.use_graphs and pipe.info["cuda_graph"].startswith("off: capture failed (RuntimeError")
    again = pipe.postprocess(pipe.infer(pipe.preprocess([frame])), sizes, CONF, IOU, TOP_K)  # eager from now on
    _assert_same(again, got)


@in_simulator
def test_stream_order_copies_and_stage_timing(onnx_model, kitti_images, tmp_path, monkeypatch):
    from fastyolo.gpu import TensorRTPipeline, runtime

    trt, plan, _ = _build(onnx_model, tmp_path, "10.8.0.43")
    device = trt.device
    pipe = TensorRTPipeline(plan, tensorrt=trt, device=device, timing=True)
    frame = _frames(kitti_images, 1)[0]
    sizes = np.array([[frame.shape[1], frame.shape[0]]], np.float64)

    def run():
        device.log.clear()
        grids = pipe.infer(pipe.preprocess([frame]))
        assert all(kind == "enqueue" for kind, _ in device.log)  # nothing has run: the host has not waited yet
        dets = pipe.postprocess(grids, sizes, CONF, IOU, TOP_K)[0]
        ran = [label for kind, label in device.log if kind == "run" and label != "event"]
        syncs = sum(kind == "sync" for kind, _ in device.log)
        return dets, ran, syncs

    dets, ran, syncs = run()
    assert ran == ["h2d", "normalize", "execute", "h2d", "h2d", "decode_nms", "d2h"]
    assert syncs == 1 and 5 < len(dets) <= TOP_K  # header and kept rows come back in one copy
    times = pipe.last_timings()
    assert set(times) == {"h2d", "infer", "decode_nms", "d2h"} and all(t >= 0 for t in times.values())

    monkeypatch.setattr(runtime, "FIRST_COPY_ROWS", 5)  # more kept rows than the first copy holds
    again, ran, syncs = run()
    assert ran[-2:] == ["d2h", "d2h"] and syncs == 2
    _assert_same([again], [dets])
