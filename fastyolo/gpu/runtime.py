"""TensorRTPipeline: a serialized engine run on one CUDA stream, decode + NMS on the device.

Per call, on one stream, with one host wait per result:

    host   resize (OpenCV, the CPU path's own resize_rgb) into pinned uint8
    H2D    224x224x3 uint8 per frame (150 kB, a quarter of the float32 input)
    device normalise to the engine's float32 NCHW input (kernels.cuda.normalize_kernel)
    device execute_async_v3
    device decode + NMS reading the engine's output buffer in place (kernels.cuda.decode_nms_kernel)
    D2H    one copy of the result buffer's head: counts, offsets and the first kept rows, sync
           (a second copy only if more than FIRST_COPY_ROWS boxes survive in the whole batch)

With `cuda_graph=True` (the default where the device can capture) all of the device work of a
call, from the H2D copy to the D2H copy, is captured once per (batch, conf, iou, top_k) into a
CUDA graph at fixed buffer addresses and replayed per call: one launch, one wait. Stage timing
(timing=True) runs the steps eagerly, since events inside a graph would time the graph alone.

Resizing stays on the host: doing it on the device would mean uploading the whole frame
(1.5 MB for 960x540) instead of 150 kB. Buffers are allocated once for the engine's largest
batch and their addresses given to TensorRT once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fastyolo.detections import Detections
from fastyolo.errors import ModelError
from fastyolo.gpu.availability import require_gpu_stack
from fastyolo.gpu.engine_file import check_compatible, read_sidecar
from fastyolo.input_format import UINT8, format_of, input_shape
from fastyolo.layout import CELL_SIZE, GRID, INPUT_NAME, INPUT_SIZE, MAX_BOXES, OUTPUT_NAME, output_shape
from fastyolo.precisions import for_runtime
from fastyolo.preprocess import resize_rgb, small_bgr

TIMED_STAGES = ("h2d", "infer", "decode_nms", "d2h")
ENGINE_PRECISIONS = for_runtime("tensorrt")  # what an engine can be built from (fastyolo.precisions)
# Rows (24 B each) brought back by the first copy with the header. A copy costs ~10 us of PCIe
# latency whatever its size and 256 rows are 6 kB (~0.5 us more at 12 GB/s), so one copy covers
# any single frame (top_k <= 242) and almost any batch; bigger results take a second copy.
FIRST_COPY_ROWS = 256


@dataclass
class DeviceBatch:
    """Frames already on the device as the engine's input; n of them."""

    n: int


@dataclass
class DeviceGrids:
    """The engine's output for n frames, still in its device buffer."""

    n: int
    grids: Any  # device view (n, S, S, CELL_SIZE) float32


def _check_precision(path: Path, requested: str, built: str) -> None:
    """An engine's precision is fixed when it is built: `requested` must be fp32 (the default: whatever it is) or that."""
    if requested not in ENGINE_PRECISIONS:
        raise ValueError(f"unknown precision {requested!r} for a TensorRT engine: choose {', '.join(ENGINE_PRECISIONS)}")
    if requested not in ("fp32", built):
        raise ModelError(
            f"{path.name} is an {built} engine and precision is fixed when an engine is built: for {requested}, "
            f"'fastyolo export ... --precision {requested}' and build an engine from that"
        )


class TensorRTPipeline:
    """The Pipeline protocol (fastyolo.pipeline) on an NVIDIA GPU."""

    def __init__(self, path: str | os.PathLike, precision: str = "fp32", *, tensorrt: ModuleType | None = None,
                 device=None, timing: bool = False, cuda_graph: bool = True):
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"engine file not found: {path}")
        trt = tensorrt or require_gpu_stack()
        if device is None:
            from fastyolo.gpu.device import NumbaCudaDevice

            device = NumbaCudaDevice()
        info = read_sidecar(path)
        check_compatible(path, info, trt.__version__, device.compute_capability)
        built = info.get("precision", "fp32")
        _check_precision(path, precision, built)

        self.trt, self.device, self.path = trt, device, path
        # A uint8-input engine (fastyolo.input_format.UINT8) normalises in its own graph: the host resizes,
        # the upload goes straight into the engine's input and the normalise kernel is not run.
        self.input_format = format_of(info.get("model_metadata", {}))
        self.uint8_input = self.input_format == UINT8
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelError(f"TensorRT cannot deserialize {path} (corrupt, or built elsewhere): rebuild it with "
                             f"'fastyolo build-engine {info.get('onnx', 'MODEL.onnx')} -o {path}'")
        self.max_batch = self._check_io()
        self.context = self.engine.create_execution_context()
        self.stream = device.stream()
        self._allocate(device, self.max_batch)
        self._bind_and_compile(device)

        self.timing = timing
        # A graph per (batch, thresholds); the device double captures too, so the control flow is tested.
        self.use_graphs = bool(cuda_graph) and not timing and hasattr(device, "capture_graph")
        self._graphs: dict[tuple, Any] = {}
        self._contexts: dict[int, Any] = {}
        self._n = 1
        self.graph_captures = 0
        self._events = {name: device.event() for name in ("start", *TIMED_STAGES)} if timing else {}
        self.info = self._info(info, precision)

    # ------------------------------------------------------------------ setup

    def _allocate(self, device, n: int) -> None:
        """Host (pinned) and device buffers for `n` frames, allocated once; their addresses never change."""
        from fastyolo.kernels.cuda import NORMALIZE_SCALE, NORMALIZE_SHIFT, ROW_VALUES

        s = INPUT_SIZE
        self._rgb_host = device.pinned((n, s, s, 3), np.uint8)
        self._sizes_host = device.pinned((n, 2), np.float64)
        # The kernel's result, header then rows, in one int32 buffer so a single copy brings back both.
        self._header_words = 1 + 2 * n
        result_words = self._header_words + n * MAX_BOXES * ROW_VALUES
        self._result_host = device.pinned((result_words,), np.int32)
        self._zero_host = device.pinned((1,), np.int32)
        self._zero_host[0] = 0
        self._rgb = device.empty((n, s, s, 3), np.uint8)
        self._input = self._rgb if self.uint8_input else device.empty((n, 3, s, s), np.float32)
        self._output = device.empty(output_shape(n), np.float32)
        self._sizes = device.empty((n, 2), np.float64)
        self._result = device.empty((result_words,), np.int32)
        self._rows = self._result[self._header_words :].view(np.float32).reshape(n * MAX_BOXES, ROW_VALUES)
        self._rows_host = self._result_host[self._header_words :].view(np.float32).reshape(n * MAX_BOXES, ROW_VALUES)
        scale = device.pinned((3,), np.float32)
        shift = device.pinned((3,), np.float32)
        scale[:], shift[:] = NORMALIZE_SCALE, NORMALIZE_SHIFT
        self._scale = device.empty((3,), np.float32)
        self._shift = device.empty((3,), np.float32)
        device.upload(scale, self._scale, self.stream)
        device.upload(shift, self._shift, self.stream)

    def _bind_and_compile(self, device) -> None:
        """Give TensorRT the I/O buffers' addresses once; compile (or load from numba's cache) the kernels now,
        not on the first frame."""
        # Every I/O tensor gets its buffer once; the addresses never change.
        buffers = {INPUT_NAME: self._input, OUTPUT_NAME: self._output}
        for name in self._io_names():
            self.context.set_tensor_address(name, device.address(buffers[name]))
        # Compile (or load from numba's cache) both kernels now, not on the first frame.
        if not self.uint8_input:
            device.launch_normalize(self._rgb[:1], self._input[:1], self._scale, self._shift, self.stream)
        device.upload(self._zero_host, self._result[:1], self.stream)
        device.launch_decode_nms(self._output[:1], self._sizes[:1], 2.0, 0.5, 1, self._rows,
                                 self._result[:3], self.stream)
        self.stream.synchronize()

    def _info(self, info: dict, precision: str) -> dict[str, Any]:
        metadata = info.get("model_metadata", {})
        return {
            "backend": "tensorrt",
            "device": self.device.name,
            "precision": info.get("precision", "fp32"),
            "requested_precision": precision,
            "threads": 1,  # one host thread drives the stream
            "model": str(self.path),
            "backbone": metadata.get("fastyolo.backbone", "unknown"),
            "untrained": metadata.get("fastyolo.untrained") == "true",
            "tensorrt": str(self.trt.__version__),
            "max_batch": self.max_batch,
            "cuda_graph": self.use_graphs,
            "input": self.input_format,
            "normalize": "graph" if self.uint8_input else "device",
        }

    def _io_names(self) -> list[str]:
        return [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def _check_io(self) -> int:
        """The engine must map INPUT_NAME (N,3,S,S) float32 (or (N,S,S,3) uint8 for a uint8-input model) to
        OUTPUT_NAME (N,S,S,C) float32; returns max N."""
        trt, engine = self.trt, self.engine
        modes = {name: engine.get_tensor_mode(name) for name in self._io_names()}
        expected = {INPUT_NAME: trt.TensorIOMode.INPUT, OUTPUT_NAME: trt.TensorIOMode.OUTPUT}
        if modes != expected:
            raise ModelError(f"{self.path} has I/O tensors {sorted(modes)}, expected {INPUT_NAME!r} -> {OUTPUT_NAME!r}: "
                             "not a fastyolo engine")
        dtypes = {INPUT_NAME: trt.DataType.UINT8 if self.uint8_input else trt.DataType.FLOAT,
                  OUTPUT_NAME: trt.DataType.FLOAT}
        for name, dtype in dtypes.items():
            if engine.get_tensor_dtype(name) != dtype:
                raise ModelError(f"{self.path}: tensor {name!r} is {engine.get_tensor_dtype(name)}, expected {dtype} "
                                 f"(input {self.input_format}: rebuild the engine from a fastyolo export)")
        if tuple(engine.get_tensor_shape(OUTPUT_NAME))[1:] != (GRID, GRID, CELL_SIZE):
            raise ModelError(f"{self.path} outputs {tuple(engine.get_tensor_shape(OUTPUT_NAME))}, expected (N, "
                             f"{GRID}, {GRID}, {CELL_SIZE})")
        _, _, largest = engine.get_tensor_profile_shape(INPUT_NAME, 0)
        return int(largest[0])

    # ------------------------------------------------------------------ the three stages

    def preprocess(self, frames: list[np.ndarray]) -> DeviceBatch:
        n = len(frames)
        if n > self.max_batch:
            raise ValueError(f"{n} frames in one call, but {self.path.name} takes at most {self.max_batch}: "
                             f"split the batch or rebuild with 'fastyolo build-engine ... --batch {n}'")
        for i, frame in enumerate(frames):
            self._rgb_host[i] = small_bgr(frame) if self.uint8_input else resize_rgb(frame)
        if not self.use_graphs:  # with graphs the upload is part of the replay, in postprocess
            self._queue_input(n)
        return DeviceBatch(n)

    def _queue_input(self, n: int) -> None:
        self._record("start")
        self.device.upload(self._rgb_host[:n], self._rgb[:n], self.stream)
        if not self.uint8_input:
            self.device.launch_normalize(self._rgb[:n], self._input[:n], self._scale, self._shift, self.stream)
        self._record("h2d")

    def infer(self, batch: DeviceBatch) -> DeviceGrids:
        n = batch.n
        if not self._context(n).set_input_shape(INPUT_NAME, tuple(input_shape(self.input_format, n))):
            raise ModelError(f"{self.path.name} rejects batch {n} (its profile is 1..{self.max_batch})")
        self._n = n
        if not self.use_graphs:  # with graphs execute_async_v3 is captured (shapes set above, on the host)
            self._queue_execute()
        return DeviceGrids(n, self._output[:n])

    def _context(self, n: int):
        """Eager: the one context. Graphs: one context per batch size, its shape never changed after capture."""
        if not self.use_graphs:
            return self.context
        context = self._contexts.get(n)
        if context is None:
            context = self.context if not self._contexts else self.engine.create_execution_context()
            buffers = {INPUT_NAME: self._input, OUTPUT_NAME: self._output}
            for name in self._io_names():
                context.set_tensor_address(name, self.device.address(buffers[name]))
            self._contexts[n] = context
        return context

    def _queue_execute(self) -> None:
        if not self._context(self._n).execute_async_v3(int(self.stream)):
            raise ModelError(f"TensorRT failed to run {self.path.name} (see its log above)")
        self._record("infer")

    def postprocess(self, grids: DeviceGrids, sizes: np.ndarray, conf: float, iou: float, top_k: int) -> list[Detections]:
        from fastyolo.kernels.cuda import ROW_VALUES  # numba.cuda is imported once a pipeline exists

        n, device, stream = grids.n, self.device, self.stream
        self._sizes_host[:n] = sizes
        bound = n * min(int(top_k), MAX_BOXES)  # kept rows can never exceed this
        first = self._header_words + min(bound, FIRST_COPY_ROWS) * ROW_VALUES
        if self.use_graphs:
            key = (n, float(conf), float(iou), int(top_k))
            graph = self._graphs.get(key)
            if graph is None:
                try:
                    graph = self._capture(key, first)
                except Exception as exc:  # not measured on every driver/TensorRT: say so and run eagerly
                    self.use_graphs = False
                    self.info["cuda_graph"] = f"off: capture failed ({type(exc).__name__}: {exc})"
                    self._queue_call(key, first)
            if graph is not None:
                device.replay_graph(graph, stream)
        else:
            self._queue_decode(n, conf, iou, top_k, first)
        stream.synchronize()
        header_host = self._result_host[: 1 + 2 * n].copy()
        total = int(header_host[0])
        if total > FIRST_COPY_ROWS:  # a big batch result: the rest of the rows
            rest = slice(first, self._header_words + total * ROW_VALUES)
            device.download(self._result[rest], self._result_host[rest], stream)
            stream.synchronize()
        rows = self._rows_host[:total]
        out = []
        for i in range(n):
            start, count = int(header_host[1 + i]), int(header_host[1 + n + i])
            block = rows[start : start + count]
            out.append(Detections(block[:, :4].copy(), block[:, 4].copy(), block[:, 5].astype(np.int32)))
        return out

    def _queue_decode(self, n: int, conf: float, iou: float, top_k: int, first: int) -> None:
        device, stream = self.device, self.stream
        device.upload(self._sizes_host[:n], self._sizes[:n], stream)
        device.upload(self._zero_host, self._result[:1], stream)
        header = self._result[: 1 + 2 * n]
        device.launch_decode_nms(self._output[:n], self._sizes[:n], conf, iou, top_k, self._rows, header, stream)
        self._record("decode_nms")
        device.download(self._result[:first], self._result_host[:first], stream)
        self._record("d2h")

    def _queue_call(self, key: tuple, first: int) -> None:
        """Everything a call puts on the stream, from the pinned frames to the pinned result."""
        self._queue_input(key[0])
        self._queue_execute()
        self._queue_decode(*key, first)

    def _capture(self, key: tuple, first: int):
        """One eager run first (TensorRT and the kernels do their lazy set-up outside the capture), then capture."""
        self._queue_call(key, first)
        self.stream.synchronize()
        graph = self.device.capture_graph(self.stream, lambda: self._queue_call(key, first))
        self._graphs[key] = graph
        self.graph_captures += 1
        return graph

    # ------------------------------------------------------------------ stage timing (bench)

    def _record(self, name: str) -> None:
        if self.timing:
            self.device.record(self._events[name], self.stream)

    def last_timings(self) -> dict[str, float]:
        """Device time of each stage of the last call in ms (needs timing=True; valid after postprocess)."""
        if not self.timing:
            raise ValueError("construct the pipeline with timing=True to time its stages")
        names = ("start", *TIMED_STAGES)
        return {stage: self.device.elapsed_ms(self._events[a], self._events[stage])
                for a, stage in zip(names, names[1:], strict=False)}
