"""TensorRT (the API double, kernels in numba's CUDA simulator) on a uint8-input engine vs the float engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fastyolo.fileio import sample_frames  # noqa: E402
from fastyolo.input_format import convert_to_uint8  # noqa: E402

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
ROOT = Path(__file__).resolve().parents[1]
in_simulator = pytest.mark.skipif(not SIMULATED, reason="runs in the CUDA-simulator child process")


@pytest.fixture(scope="module")
def onnx_model(request) -> Path:
    path = os.environ.get("FASTYOLO_TEST_ONNX")
    return Path(path) if path else request.getfixturevalue("untrained_r18")


@pytest.mark.skipif(SIMULATED, reason="runs in the parent process")
def test_under_simulator(onnx_model: Path):
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "FASTYOLO_TEST_ONNX": str(onnx_model)}
    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-x", "-p", "no:cacheprovider"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


@in_simulator
def test_tensorrt_uint8_engine_agrees_with_the_float_engine(onnx_model: Path, tmp_path: Path, kitti_images):
    import cv2
    from tensorrt_double import FakeTensorRT, QueuedHostDevice

    from fastyolo.gpu import build_engine
    from fastyolo.gpu.runtime import TensorRTPipeline

    uint8_model = convert_to_uint8(onnx_model, tmp_path / "uint8.onnx")

    frames = [cv2.imread(str(p)) for p in kitti_images[:3]] + sample_frames(clip_path_default(), 2)
    grids, found = [], []
    for onnx_path in (onnx_model, uint8_model):
        trt = FakeTensorRT("10.8.0.43", QueuedHostDevice())
        plan = tmp_path / f"{onnx_path.stem}.plan"
        build_engine(onnx_path, plan, tensorrt=trt, device=trt.device, max_batch=8)
        # Eager: a graph's first call runs the work twice (warm-up, then the captured replay); graphs are
        # test_tensorrt.py's, the input format is this test's.
        pipe = TensorRTPipeline(plan, tensorrt=trt, device=trt.device, cuda_graph=False)
        sizes = np.array([(f.shape[1], f.shape[0]) for f in frames], np.float64)
        # One pass per engine (a simulated decode + NMS image costs about a second): the kept boxes, then the grid
        # that the same queued work left in the output buffer.
        out = pipe.infer(pipe.preprocess(frames))
        found.append(pipe.postprocess(out, sizes, 0.01, 0.45, 100))
        grids.append(np.array(out.grids, np.float32).copy())
    assert pipe.info["input"] == "nhwc_uint8_bgr" and pipe.info["normalize"] == "graph"
    assert np.abs(grids[0] - grids[1]).max() < 1e-4
    for a, b in zip(*found, strict=True):
        assert len(a) == len(b) and np.allclose(a.boxes, b.boxes, atol=1e-2)


def clip_path_default() -> Path:
    from fastyolo.fileio import sample_video

    return sample_video()
