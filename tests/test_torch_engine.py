"""The torch engine (fastyolo.gpu.torch_engine) without a GPU: the same pipeline on the CPU device.

On the CPU it runs every step but the two device-only pieces (the numba-cuda decode kernel, which
tests/test_cuda_kernels.py checks against the reference, and torch.cuda graphs): the checkpoint
loading, the device-side normalisation, the network in channels_last, the header + rows result
layout and its split, the second copy for big results, and the per-(batch, thresholds) graph
capture/replay logic with a graph double. bench/gpu_check.py runs the GPU path on hardware.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch engine needs the [train] extra")

CONF, IOU, TOP_K = 0.1, 0.45, 100  # an untrained network scores ~0.1-0.3


@pytest.fixture(scope="module")
def checkpoint_and_onnx(tmp_path_factory) -> tuple[Path, Path]:
    """One untrained ResNet-18 as a training checkpoint and as its fp32 ONNX export."""
    from fastyolo.train.checkpoint import save_checkpoint
    from fastyolo.train.export import export_onnx
    from fastyolo.train.model import YoloNet

    out = tmp_path_factory.mktemp("torch-engine")
    torch.manual_seed(0)
    model = YoloNet("resnet18").eval()
    save_checkpoint(out / "best.pt", model)
    export_onnx(model, out / "model.onnx", untrained=True)
    return out / "best.pt", out / "model.onnx"


@pytest.fixture(scope="module")
def frames(kitti_images) -> list[np.ndarray]:
    import cv2

    return [cv2.imread(str(p)) for p in kitti_images[:4]]


def _sizes(frames) -> np.ndarray:
    return np.array([(f.shape[1], f.shape[0]) for f in frames], np.float64)


def _detect(pipe, frames, conf=CONF, iou=IOU, top_k=TOP_K):
    return pipe.postprocess(pipe.infer(pipe.preprocess(frames)), _sizes(frames), conf, iou, top_k)


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.boxes, w.boxes)
        np.testing.assert_array_equal(g.scores, w.scores)
        np.testing.assert_array_equal(g.class_ids, w.class_ids)


class FakeGraph:
    """torch.cuda.CUDAGraph's part the pipeline uses: capture() records the steps, replay() runs them again."""

    made: list[FakeGraph] = []

    def __init__(self):
        self.fn, self.replays = None, 0
        FakeGraph.made.append(self)

    def capture(self, fn, stream) -> None:
        assert self.fn is None, "one capture per graph"
        self.fn = fn

    def replay(self) -> None:
        self.replays += 1
        self.fn()


def test_normalisation_matches_the_host(checkpoint_and_onnx, frames):
    from fastyolo.gpu.torch_engine import TorchPipeline
    from fastyolo.preprocess import normalize, resize_rgb

    pipe = TorchPipeline(checkpoint_and_onnx[0], precision="fp32", device="cpu", max_batch=2)
    n = pipe.preprocess(frames[:2]).n
    pipe._rgb[:n].copy_(pipe._rgb_host[:n])
    got = pipe._normalise(n)
    assert got.is_contiguous(memory_format=torch.channels_last)  # the NHWC upload is the channels_last input
    for i in range(n):
        np.testing.assert_array_equal(got[i].numpy(), normalize(resize_rgb(frames[i])))


def test_checkpoint_on_cpu_matches_the_cpu_detector(checkpoint_and_onnx, frames):
    from fastyolo.kernels import decode_nms_batch

    from fastyolo.gpu.torch_engine import TorchPipeline
    from fastyolo.pipeline import CpuPipeline, split_batch

    ckpt, onnx = checkpoint_and_onnx
    pipe = TorchPipeline(ckpt, precision="fp32", device="cpu", max_batch=4)
    cpu = CpuPipeline(onnx, "onnxruntime", "fp32", 1)
    assert pipe.info["backend"] == "torch" and pipe.info["device"] == "CPU" and pipe.info["backbone"] == "resnet18"
    got = _detect(pipe, frames)
    want = cpu.postprocess(cpu.infer(cpu.preprocess(frames)), _sizes(frames), CONF, IOU, TOP_K)
    assert sum(len(d) for d in want) > 0  # not vacuous
    # torch and onnxruntime convolutions differ in the last bits: the same network, to 1e-4
    raw = pipe.raw(frames)
    np.testing.assert_allclose(raw, cpu.infer(cpu.preprocess(frames)), atol=1e-4)
    # the engine's decode + result layout is exact: its own grids through the njit decode give its detections
    _assert_same(got, split_batch(*decode_nms_batch(raw, _sizes(frames), CONF, IOU, TOP_K)))
    from fastyolo.metrics import evaluate

    score = evaluate(got, [(d.boxes, d.class_ids) for d in want])["map50"]
    assert score >= 0.98, score


def test_big_results_take_a_second_copy(checkpoint_and_onnx, frames, monkeypatch):
    from fastyolo.gpu import torch_engine

    pipe = torch_engine.TorchPipeline(checkpoint_and_onnx[0], precision="fp32", device="cpu", max_batch=4)
    want = _detect(pipe, frames, conf=0.0, iou=1.0, top_k=242)  # every box kept: 4 x 242 rows
    assert [len(d) for d in want] == [242] * 4
    monkeypatch.setattr(torch_engine, "FIRST_COPY_ROWS", 5)
    pipe._result_host.fill_(-1)  # nothing left over from the first run
    _assert_same(_detect(pipe, frames, conf=0.0, iou=1.0, top_k=242), want)


def test_graph_per_batch_and_thresholds(checkpoint_and_onnx, frames):
    from fastyolo.gpu.torch_engine import TorchPipeline

    eager = TorchPipeline(checkpoint_and_onnx[0], precision="fp32", device="cpu", max_batch=2)
    FakeGraph.made.clear()
    graphed = TorchPipeline(checkpoint_and_onnx[0], precision="fp32", device="cpu", max_batch=2,
                            graph_factory=FakeGraph)
    for batch in ([frames[0]], [frames[1]], frames[:2], frames[2:4], [frames[3]]):
        _assert_same(_detect(graphed, batch), _detect(eager, batch))
    _assert_same(_detect(graphed, frames[:2], conf=0.2), _detect(eager, frames[:2], conf=0.2))
    assert graphed.graph_captures == 3 == len(FakeGraph.made)  # batch 1, batch 2, batch 2 at another conf
    assert [g.replays for g in FakeGraph.made] == [3, 2, 1]
    with pytest.raises(ValueError, match="at most 2"):
        graphed.preprocess(frames[:3])


def test_detector_runs_a_checkpoint(checkpoint_and_onnx, frames):
    from fastyolo import Detector
    from fastyolo.gpu.torch_engine import TorchPipeline

    ckpt, _ = checkpoint_and_onnx
    det = Detector(ckpt, device="cpu", conf=CONF, iou=IOU, top_k=TOP_K)  # .pt: the torch engine
    assert det.info["backend"] == "torch" and det.info["precision"] == "fp32"
    same = Detector(ckpt, backend="torch", device="cpu", conf=CONF, iou=IOU, top_k=TOP_K)
    pipe = TorchPipeline(ckpt, precision="fp32", device="cpu")
    want = _detect(pipe, frames[:2])
    _assert_same(det.detect_batch(frames[:2]), want)
    _assert_same([same.detect(frames[1])], want[1:])
    np.testing.assert_array_equal(det.raw_outputs(frames[:2]), pipe.raw(frames[:2]))


def test_refusals(checkpoint_and_onnx, tmp_path):
    from fastyolo.errors import FastYoloError
    from fastyolo.gpu.torch_engine import TorchPipeline

    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        TorchPipeline(checkpoint_and_onnx[0], precision="int8", device="cpu")
    with pytest.raises(FastYoloError, match="checkpoint not found"):
        TorchPipeline(tmp_path / "missing.pt", precision="fp32", device="cpu")
    if not torch.cuda.is_available():
        from fastyolo.errors import GpuUnavailableError

        with pytest.raises(GpuUnavailableError, match="device='cpu'"):
            TorchPipeline(checkpoint_and_onnx[0], device="cuda")
