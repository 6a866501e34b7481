"""TorchPipeline: the training checkpoint's network in torch, for GPUs where TensorRT is not installed.

Per call, one stream, one host wait:

    host   resize (the CPU path's own resize_rgb) into a pinned uint8 buffer, sizes into pinned f64
    H2D    the uint8 frames (150 kB each) and the sizes, into fixed device buffers
    device normalise as the host does (uint8 -> f32, * scale, + shift: two roundings), cast to the
           network's dtype; the NHWC upload viewed as NCHW *is* channels_last, so no transpose
    device the network (fp16 / bf16 / fp32, channels_last), its output cast to an f32 grid buffer
    device decode + NMS: the numba-cuda kernel on torch's stream (numba.cuda.external_stream),
           reading the grid buffer in place through cuda.as_cuda_array
    D2H    header + the first kept rows into pinned memory, in one copy

On a GPU with `cuda_graph=True` those steps are captured once per (batch, conf, iou, top_k) into a
CUDA graph and replayed per call: one launch, the buffers at fixed addresses. The kernel's
thresholds are launch arguments, so they are part of the graph (a Detector keeps them fixed).

On the CPU (device="cpu": tests, or a machine without a GPU) the same steps run eagerly in torch
and the decode is the njit kernel, written into the same header + rows layout, so everything but
the device kernels and the graph is tested without a GPU. TensorRT stays the first choice where
it is installed: build an engine (fastyolo build-engine) and use the .plan.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastyolo.detections import Detections
from fastyolo.errors import GpuUnavailableError, ModelError
from fastyolo.layout import CELL_SIZE, GRID, INPUT_SIZE, MAX_BOXES, MEAN, STD
from fastyolo.precisions import for_runtime
from fastyolo.preprocess import resize_rgb

TORCH_PRECISIONS = for_runtime("torch")  # fastyolo.precisions
ROW_VALUES = 6  # kernels.cuda.ROW_VALUES (not imported: that would import numba.cuda on the CPU path)
# Rows brought back by the copy inside the graph; more kept rows in one batch take a second copy.
FIRST_COPY_ROWS = 256
STAGES = ("h2d_normalize", "network", "decode_nms", "d2h")


@dataclass
class PendingBatch:
    """Frames resized into the pinned input buffer; the device work runs in postprocess.

    `np.asarray(batch)` runs the network alone and gives its (n, S, S, CELL_SIZE) f32 output on the
    host, which is what Detector.raw_outputs expects from `infer`.
    """

    n: int
    pipeline: TorchPipeline

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        grids = self.pipeline.grids_of_pending(self.n)
        return grids if dtype is None else grids.astype(dtype)


def _dtype(precision: str):
    import torch

    if precision not in TORCH_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} for the torch engine: choose {', '.join(TORCH_PRECISIONS)}")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def load_network(model: str | os.PathLike | Any):
    """A checkpoint path -> its network (the checkpoint's own backbone/head config), or an nn.Module as is."""
    if isinstance(model, (str, os.PathLike)):
        try:
            from fastyolo.train.checkpoint import load_model
        except ImportError:
            raise ModelError("running a checkpoint needs torch: pip install 'fastyolo[train]'") from None
        return load_model(Path(model))
    return model


def cuda_graph_factory():
    """A new torch.cuda.CUDAGraph with capture() and replay(), the interface the pipeline uses."""
    import torch

    class _Graph:
        def __init__(self):
            self.graph = torch.cuda.CUDAGraph()

        def capture(self, fn: Callable[[], None], stream) -> None:
            # thread_local: another thread's unrelated CUDA calls must not invalidate this capture
            with torch.cuda.graph(self.graph, stream=stream, capture_error_mode="thread_local"):
                fn()

        def replay(self) -> None:
            self.graph.replay()

    return _Graph()


class TorchPipeline:
    """The Pipeline protocol (fastyolo.pipeline) on torch: a checkpoint (.pt) or an nn.Module."""

    thread_safe = False  # one set of buffers, one stream: the Detector serialises calls

    def __init__(self, model: str | os.PathLike | Any, precision: str = "fp16", device: str | None = None, *,
                 max_batch: int = 8, cuda_graph: bool = True, timing: bool = False,
                 graph_factory: Callable[[], Any] | None = None):
        try:
            import torch
        except ImportError:
            raise ModelError("the torch engine needs torch: pip install 'fastyolo[train]'") from None
        dtype = _dtype(precision)
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.on_gpu = device.type == "cuda"
        if self.on_gpu:
            from fastyolo.gpu.availability import gpu_problem

            problem = (None if torch.cuda.is_available() else "torch sees no CUDA GPU") or gpu_problem()
            if problem:
                raise GpuUnavailableError(f"{problem}: run the checkpoint with device='cpu', or export it to .onnx")
        self.torch, self.device, self.dtype, self.precision = torch, device, dtype, precision
        self.max_batch = int(max_batch)
        self.timing = timing and self.on_gpu
        # A graph needs a GPU; graph_factory lets tests drive the capture/replay logic with a double.
        self._graph_factory = graph_factory or (cuda_graph_factory if self.on_gpu and cuda_graph else None)
        self._graphs: dict[tuple, Any] = {}
        self.graph_captures = 0

        net = load_network(model)
        self.source = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
        self.net = net.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)

        n, s = self.max_batch, INPUT_SIZE
        pin = self.on_gpu  # page-locked host buffers make the copies asynchronous DMA
        self._rgb_host = torch.zeros((n, s, s, 3), dtype=torch.uint8, pin_memory=pin)
        self._sizes_host = torch.zeros((n, 2), dtype=torch.float64, pin_memory=pin)
        self._header_words = 1 + 2 * n
        result_words = self._header_words + n * MAX_BOXES * ROW_VALUES
        self._result_host = torch.zeros(result_words, dtype=torch.int32, pin_memory=pin)
        self._rgb = torch.zeros((n, s, s, 3), dtype=torch.uint8, device=device)
        self._sizes = torch.zeros((n, 2), dtype=torch.float64, device=device)
        self._grids = torch.zeros((n, GRID, GRID, CELL_SIZE), dtype=torch.float32, device=device)
        self._result = torch.zeros(result_words, dtype=torch.int32, device=device)
        self._scale = torch.tensor(1.0 / (255.0 * np.asarray(STD, np.float32)), dtype=torch.float32, device=device)
        self._shift = torch.tensor(-np.asarray(MEAN, np.float32) / np.asarray(STD, np.float32), dtype=torch.float32,
                                   device=device)
        self._scale = self._scale.view(1, 3, 1, 1)
        self._shift = self._shift.view(1, 3, 1, 1)
        self.stream = torch.cuda.Stream(device) if self.on_gpu else None
        self._numba_views: dict[int, tuple] = {}
        self._numba_streams: dict[int, Any] = {}
        self._events = {}
        if self.timing:
            self._events = {name: torch.cuda.Event(enable_timing=True) for name in ("start", *STAGES)}
        self.info = {
            "backend": "torch",
            "device": torch.cuda.get_device_name(device) if self.on_gpu else "CPU",
            "precision": precision,
            "requested_precision": precision,
            "threads": 1,
            "model": self.source,
            "backbone": getattr(net, "backbone_name", "unknown"),
            "untrained": False,
            "torch": torch.__version__,
            "max_batch": self.max_batch,
            "cuda_graph": self._graph_factory is not None,
        }

    # ------------------------------------------------------------------ the device steps

    def _normalise(self, n: int):
        """uint8 NHWC -> the network's input: (x * scale) + shift in f32, two roundings as fastyolo.preprocess."""
        x = self._rgb[:n].permute(0, 3, 1, 2).float()  # NHWC memory viewed as NCHW: channels_last already
        x.mul_(self._scale).add_(self._shift)
        return x.to(self.dtype)

    def _views(self, n: int) -> tuple:
        """numba device arrays over the torch buffers for batch n, made once (as_cuda_array must not sync in a capture)."""
        views = self._numba_views.get(n)
        if views is None:
            from fastyolo.kernels import cuda as kernels  # numba.cuda, after its numpy shim

            as_array = kernels.cuda.as_cuda_array
            rows = self._result[self._header_words :].view(self.torch.float32).view(-1, ROW_VALUES)
            views = (as_array(self._grids[:n], sync=False), as_array(self._sizes[:n], sync=False),
                     as_array(rows, sync=False), as_array(self._result[: 1 + 2 * n], sync=False))
            self._numba_views[n] = views
        return views

    def _decode(self, n: int, conf: float, iou: float, top_k: int) -> None:
        if self.on_gpu:
            from fastyolo.kernels import cuda as kernels

            grids, sizes, rows, header = self._views(n)
            handle = self.torch.cuda.current_stream(self.device).cuda_stream
            stream = self._numba_streams.get(handle)
            if stream is None:  # made in the warm-up, not inside a capture
                stream = self._numba_streams[handle] = kernels.cuda.external_stream(handle)
            kernels.launch_decode_nms(grids, sizes, conf, iou, top_k, rows, header, stream)
            return
        from fastyolo.kernels import decode_nms_batch

        boxes, scores, classes, counts = decode_nms_batch(self._grids[:n].numpy(), self._sizes[:n].numpy(),
                                                          conf, iou, top_k)
        write_rows(self._result.numpy(), n, self._header_words, boxes, scores, classes, counts)

    def _record(self, name: str) -> None:
        # timing events cannot be recorded into a graph: the replay is timed as a whole
        if self.timing and not self.torch.cuda.is_current_stream_capturing():
            self._events[name].record(self.torch.cuda.current_stream(self.device))

    def _steps(self, n: int, conf: float, iou: float, top_k: int, first: int) -> None:
        """Everything from the pinned input to the pinned result, queued on the current stream (or captured)."""
        self._record("start")
        self._rgb[:n].copy_(self._rgb_host[:n], non_blocking=True)
        self._sizes[:n].copy_(self._sizes_host[:n], non_blocking=True)
        images = self._normalise(n)
        self._record("h2d_normalize")
        with self.torch.no_grad():
            out = self.net(images)
        # The layout's grid, or its flat rows (a fully connected head); anything else would decode as garbage.
        if tuple(out.shape) not in ((n, GRID, GRID, CELL_SIZE), (n, GRID * GRID * CELL_SIZE)):
            from fastyolo.backends.base import wrong_output

            raise wrong_output(self.source, tuple(out.shape), out.dtype, n)
        self._grids[:n].copy_(out.reshape(n, GRID, GRID, CELL_SIZE))
        self._record("network")
        self._result[:1].zero_()
        self._decode(n, conf, iou, top_k)
        self._record("decode_nms")
        self._result_host[:first].copy_(self._result[:first], non_blocking=True)
        self._record("d2h")

    # ------------------------------------------------------------------ the three stages

    def preprocess(self, frames: list[np.ndarray]) -> PendingBatch:
        n = len(frames)
        if n > self.max_batch:
            raise ValueError(f"{n} frames in one call, but this torch engine takes at most {self.max_batch}: "
                             "split the batch or raise max_batch")
        host = self._rgb_host.numpy()
        for i, frame in enumerate(frames):
            host[i] = resize_rgb(frame)
        return PendingBatch(n, self)

    def infer(self, batch: PendingBatch) -> PendingBatch:
        return batch  # the network runs with the rest of the device steps, in one launch (see postprocess)

    def postprocess(self, batch: PendingBatch, sizes: np.ndarray, conf: float, iou: float, top_k: int) -> list[Detections]:
        n = batch.n
        top_k = min(int(top_k), MAX_BOXES)
        self._sizes_host[:n] = self.torch.from_numpy(np.ascontiguousarray(sizes, np.float64))
        first = self._header_words + min(n * top_k, FIRST_COPY_ROWS) * ROW_VALUES
        self.run_device(n, float(conf), float(iou), top_k, first)
        header = self._result_host[: 1 + 2 * n].numpy().copy()
        total = int(header[0])
        if total * ROW_VALUES + self._header_words > first:  # a big batch result: the rest of the rows
            rest = slice(first, self._header_words + total * ROW_VALUES)
            self._result_host[rest].copy_(self._result[rest])
        rows = self._result_host[self._header_words :].numpy().view(np.float32).reshape(-1, ROW_VALUES)
        return split_result(rows, header, n)

    def run_device(self, n: int, conf: float, iou: float, top_k: int, first: int) -> None:
        """The device steps for a batch of n, then one wait: replayed from a graph where there is one."""
        with self._on_stream():
            if self._graph_factory is None:
                self._steps(n, conf, iou, top_k, first)
            else:
                key = (n, conf, iou, top_k, first)
                graph = self._graphs.get(key)
                if graph is None:
                    graph = self._capture(key)
                graph.replay()
        self._wait()

    def _on_stream(self):
        return self.torch.cuda.stream(self.stream) if self.on_gpu else contextlib.nullcontext()

    def _wait(self) -> None:
        if self.on_gpu:
            self.stream.synchronize()

    def _capture(self, key: tuple):
        """Warm up eagerly (kernels compiled, cuDNN algorithms chosen, numba views made), then capture."""
        for _ in range(2):
            self._steps(*key)
        self._wait()
        graph = self._graph_factory()
        graph.capture(lambda: self._steps(*key), self.stream)
        self._graphs[key] = graph
        self.graph_captures += 1
        return graph

    def last_timings(self) -> dict[str, float]:
        """GPU time of each stage of the last eager call in ms (timing=True and cuda_graph=False)."""
        if not self.timing:
            raise ValueError("construct the pipeline with timing=True on a GPU to time its stages")
        names = ("start", *STAGES)
        return {b: float(self._events[a].elapsed_time(self._events[b])) for a, b in zip(names, names[1:], strict=False)}

    def grids_of_pending(self, n: int) -> np.ndarray:
        """The network's (n, S, S, CELL_SIZE) output for the frames preprocess() took, as f32 on the host; eager."""
        self._sizes_host[:n] = 1.0
        with self._on_stream():
            self._steps(n, 2.0, 0.5, 1, self._header_words)
        self._wait()
        return self._grids[:n].cpu().numpy().copy()

    def raw(self, frames: list[np.ndarray]) -> np.ndarray:
        """The network's output for `frames` on the host (agreement checks)."""
        return np.asarray(self.preprocess(frames))


def write_rows(result: np.ndarray, n: int, header_words: int, boxes: np.ndarray, scores: np.ndarray,
               classes: np.ndarray, counts: np.ndarray) -> None:
    """The njit decode's padded outputs -> the CUDA kernel's layout: header [total, starts, counts] + rows."""
    rows = result[header_words:].view(np.float32).reshape(-1, ROW_VALUES)
    start = 0
    for i in range(n):
        k = int(counts[i])
        result[1 + i], result[1 + n + i] = start, k
        block = rows[start : start + k]
        block[:, :4] = boxes[i, :k]
        block[:, 4] = scores[i, :k]
        block[:, 5] = classes[i, :k].astype(np.float32)
        start += k
    result[0] = start


def split_result(rows: np.ndarray, header: np.ndarray, n: int) -> list[Detections]:
    """Header + rows (either decode) -> one Detections per frame, copied out of the reused buffer."""
    out = []
    for i in range(n):
        start, count = int(header[1 + i]), int(header[1 + n + i])
        block = rows[start : start + count]
        out.append(Detections(block[:, :4].copy(), block[:, 4].copy(), block[:, 5].astype(np.int32)))
    return out
