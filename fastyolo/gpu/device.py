"""Device memory, streams, events and kernel launches behind one small interface.

`NumbaCudaDevice` is the real one (numba-cuda, itself on cuda-bindings). The runtime only talks
to this interface, so tests can hand it a host-memory implementation and run the whole TensorRT
glue on a CPU (tests/tensorrt_double.py).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Device(Protocol):
    name: str  # e.g. "NVIDIA GeForce RTX 3060"
    compute_capability: tuple[int, int]

    def stream(self) -> Any:
        """A new stream; `int(stream)` is its handle for TensorRT, `stream.synchronize()` waits for it."""

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Uninitialised device array (slicing [:n] gives a device view)."""

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Page-locked host array, so copies are asynchronous DMA."""

    def address(self, array: Any) -> int:
        """The raw device pointer of a device array (what set_tensor_address takes)."""

    def upload(self, host: np.ndarray, device: Any, stream: Any) -> None:
        """Queue host -> device."""

    def download(self, device: Any, host: np.ndarray, stream: Any) -> None:
        """Queue device -> host; `host` holds the data only after the stream is synchronised."""

    def launch_normalize(self, rgb: Any, images: Any, scale: Any, shift: Any, stream: Any) -> None: ...

    def launch_decode_nms(self, grids: Any, sizes: Any, conf: float, iou: float, top_k: int,
                          rows: Any, header: Any, stream: Any) -> None: ...

    def event(self) -> Any:
        """A timing event: `record(event, stream)`, then after a sync `elapsed_ms(start, end)`."""

    def record(self, event: Any, stream: Any) -> None: ...

    def elapsed_ms(self, start: Any, end: Any) -> float: ...

    def capture_graph(self, stream: Any, queue: Any) -> Any:
        """Capture what `queue()` puts on `stream` into an executable CUDA graph (nothing runs)."""

    def replay_graph(self, graph: Any, stream: Any) -> None:
        """Queue one replay of a captured graph on `stream`."""


class NumbaCudaDevice:
    """The current CUDA device through numba-cuda."""

    def __init__(self):
        from fastyolo.gpu.availability import require_gpu_stack

        require_gpu_stack(need_tensorrt=False)
        from numba import cuda

        from fastyolo.kernels import cuda as kernels

        self._cuda = cuda
        self._kernels = kernels
        gpu = cuda.get_current_device()
        name = gpu.name
        self.name = name.decode() if isinstance(name, bytes) else str(name)
        self.compute_capability = tuple(int(v) for v in gpu.compute_capability)

    def stream(self):
        return self._cuda.stream()

    def empty(self, shape, dtype):
        return self._cuda.device_array(shape, dtype)

    def pinned(self, shape, dtype):
        return self._cuda.pinned_array(shape, dtype)

    def address(self, array) -> int:
        return int(array.__cuda_array_interface__["data"][0])

    def upload(self, host, device, stream) -> None:
        device.copy_to_device(host, stream=stream)

    def download(self, device, host, stream) -> None:
        device.copy_to_host(host, stream=stream)

    def launch_normalize(self, rgb, images, scale, shift, stream) -> None:
        self._kernels.launch_normalize(rgb, images, scale, shift, stream)

    def launch_decode_nms(self, grids, sizes, conf, iou, top_k, rows, header, stream) -> None:
        self._kernels.launch_decode_nms(grids, sizes, conf, iou, top_k, rows, header, stream)

    def event(self):
        return self._cuda.event(timing=True)

    def record(self, event, stream) -> None:
        event.record(stream)

    def elapsed_ms(self, start, end) -> float:
        return float(self._cuda.event_elapsed_time(start, end))

    def capture_graph(self, stream, queue):
        """Stream capture through cuda-bindings' driver API (numba launches and TensorRT's are capturable)."""
        from cuda.bindings import driver

        handle = driver.CUstream(int(stream))  # the handle TensorRT is given too
        _check(driver.cuStreamBeginCapture(handle, driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL))
        try:
            queue()
        finally:
            graph = _check(driver.cuStreamEndCapture(handle))
        return handle, _check(driver.cuGraphInstantiate(graph, 0)), graph

    def replay_graph(self, graph, stream) -> None:
        from cuda.bindings import driver

        handle, executable, _ = graph
        _check(driver.cuGraphLaunch(executable, handle))


def _check(result):
    """cuda-bindings returns (CUresult, value...): raise on an error, return the value."""
    err, *value = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA driver error {err}")
    return value[0] if len(value) == 1 else (value or None)
