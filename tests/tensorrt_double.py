"""TEST DOUBLES ONLY: the slice of the TensorRT Python API fastyolo uses, and a GPU made of host memory.

`FakeTensorRT(version)` imitates TensorRT 10 or 11 (11 has no FP16/INT8 builder flags and no
EXPLICIT_BATCH) and checks how it is called: the network flags, that the ONNX was parsed, the
optimisation profile, that every I/O tensor has an address of a large enough buffer and an
input shape inside the profile before execute_async_v3. Its "engine" runs the real ONNX with
onnxruntime when the stream reaches it.

`QueuedHostDevice` implements fastyolo.gpu.device.Device with numpy arrays: work queued on a
stream (copies, kernels, TensorRT) runs only when the stream is synchronised, and a download's
host buffer is poisoned until then, so reading a result before synchronising gives garbage.
The decode + NMS kernel is the real kernels/cuda.py one, run by numba's CUDA simulator (set
NUMBA_ENABLE_CUDASIM=1 before importing numba); the normalisation is numpy with the kernel's
arithmetic (the simulator needs minutes for 150k threads; that kernel is tested on its own).
"""

from __future__ import annotations

import enum
import json
import time
from types import SimpleNamespace

import numpy as np

from fastyolo.layout import CELL_SIZE, GRID, INPUT_NAME, INPUT_SIZE, OUTPUT_NAME

POISON = 0xAB
MAGIC = b"FAKE-TRT-PLAN\n"


# ---------------------------------------------------------------- a GPU made of host memory


class HostStream:
    def __init__(self, device, handle: int):
        self.device, self.handle, self.queue = device, handle, []
        self.synchronized = 0
        self.capturing: list | None = None  # stream capture: work is recorded, not queued

    def __int__(self) -> int:
        return self.handle

    def enqueue(self, label: str, work) -> None:
        if self.capturing is not None:
            self.device.log.append(("capture", label))
            self.capturing.append((label, work))
            return
        self.device.log.append(("enqueue", label))
        self.queue.append((label, work))

    def synchronize(self) -> None:
        assert self.capturing is None, "synchronize during a stream capture (illegal on a GPU)"
        while self.queue:
            label, work = self.queue.pop(0)
            work()
            self.device.log.append(("run", label))
        self.synchronized += 1
        self.device.log.append(("sync", None))


class HostGraph:
    """A captured graph: the recorded work, each item bound to the same buffers (fixed addresses)."""

    def __init__(self, work: list):
        self.work, self.replays = work, 0


class HostEvent:
    def __init__(self):
        self.time: float | None = None


class QueuedHostDevice:
    name = "Test double GPU (host memory)"

    def __init__(self, compute_capability: tuple[int, int] = (8, 6)):
        self.compute_capability = compute_capability
        self.allocations: list[np.ndarray] = []
        self.pinned_arrays: list[np.ndarray] = []
        self.streams: dict[int, HostStream] = {}
        self.log: list[tuple[str, str | None]] = []
        self.graphs: list[HostGraph] = []

    def stream(self) -> HostStream:
        handle = 0x5000 + len(self.streams)
        self.streams[handle] = HostStream(self, handle)
        return self.streams[handle]

    def empty(self, shape, dtype) -> np.ndarray:
        array = np.empty(shape, dtype)
        array.view(np.uint8).fill(POISON)  # uninitialised device memory
        self.allocations.append(array)
        return array

    def pinned(self, shape, dtype) -> np.ndarray:
        array = np.zeros(shape, dtype)
        self.pinned_arrays.append(array)
        return array

    def address(self, array: np.ndarray) -> int:
        assert any(np.shares_memory(array, a) for a in self.allocations), "address of a non-device array"
        return int(array.ctypes.data)

    def resolve(self, pointer: int, shape: tuple[int, ...], dtype) -> np.ndarray:
        """The device array view at `pointer` (what TensorRT would read/write); fails on a bad or short buffer."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        for a in self.allocations:
            start = a.ctypes.data
            if start <= pointer and pointer + nbytes <= start + a.nbytes:
                flat = a.reshape(-1).view(np.uint8)
                return flat[pointer - start : pointer - start + nbytes].view(dtype).reshape(shape)
        raise AssertionError(f"pointer {pointer:#x} ({nbytes} bytes) is not inside any device allocation")

    def _check_pinned(self, host: np.ndarray) -> None:
        assert any(np.shares_memory(host, p) for p in self.pinned_arrays), "async copy from pageable host memory"

    def upload(self, host, device, stream: HostStream) -> None:
        self._check_pinned(host)
        assert host.shape == device.shape and host.dtype == device.dtype, (host.shape, device.shape)
        stream.enqueue("h2d", lambda: np.copyto(device, host))

    def download(self, device, host, stream: HostStream) -> None:
        self._check_pinned(host)
        assert host.shape == device.shape and host.dtype == device.dtype, (host.shape, device.shape)
        host.view(np.uint8).fill(POISON)  # in flight: not valid until the stream is synchronised
        stream.enqueue("d2h", lambda: np.copyto(host, device))

    def launch_normalize(self, rgb, images, scale, shift, stream: HostStream) -> None:
        def work():
            chw = rgb.transpose(0, 3, 1, 2).astype(np.float32)
            np.multiply(chw, scale[None, :, None, None], out=images)  # the kernel's two roundings
            images[...] += shift[None, :, None, None]

        stream.enqueue("normalize", work)

    def launch_decode_nms(self, grids, sizes, conf, iou, top_k, rows, header, stream: HostStream) -> None:
        from fastyolo.kernels import cuda as kernels

        assert kernels.SIMULATOR, "the host device runs the CUDA kernel in numba's simulator"
        stream.enqueue("decode_nms", lambda: kernels.launch_decode_nms(grids, sizes, conf, iou, top_k, rows, header))

    def capture_graph(self, stream: HostStream, queue) -> HostGraph:
        assert stream.capturing is None and not stream.queue, "capture on a busy stream"
        stream.capturing = []
        try:
            queue()
        finally:
            work, stream.capturing = stream.capturing, None
        self.graphs.append(HostGraph(work))
        return self.graphs[-1]

    def replay_graph(self, graph: HostGraph, stream: HostStream) -> None:
        graph.replays += 1
        for label, work in graph.work:
            stream.enqueue(label, work)

    def event(self) -> HostEvent:
        return HostEvent()

    def record(self, event: HostEvent, stream: HostStream) -> None:
        stream.enqueue("event", lambda: setattr(event, "time", time.perf_counter()))

    def elapsed_ms(self, start: HostEvent, end: HostEvent) -> float:
        assert start.time is not None and end.time is not None, "event read before its stream was synchronised"
        return (end.time - start.time) * 1000.0


# ---------------------------------------------------------------- the TensorRT API surface


class FakeLogger:
    WARNING = "WARNING"
    INFO = "INFO"

    def __init__(self, severity=None):
        self.severity = severity


class FakeParserError:
    def __init__(self, text: str):
        self.text = text

    def desc(self) -> str:
        return self.text


class FakeNetwork:
    def __init__(self, flags: int):
        self.flags = flags
        self.onnx: bytes | None = None


class FakeParser:
    def __init__(self, network: FakeNetwork, logger):
        assert isinstance(logger, FakeLogger)
        self.network, self.errors = network, []

    def parse(self, data: bytes) -> bool:
        import onnx

        try:
            onnx.checker.check_model(onnx.load_model_from_string(bytes(data)))
        except Exception as exc:
            self.errors.append(FakeParserError(f"ModelImporter: {type(exc).__name__}: {exc}"))
            return False
        self.network.onnx = bytes(data)
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> FakeParserError:
        return self.errors[i]


class FakeProfile:
    def __init__(self):
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's keyword names
        assert all(a <= b <= c for a, b, c in zip(min, opt, max, strict=True)), (min, opt, max)
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class FakeConfig:
    def __init__(self, trt):
        self.trt, self.flags, self.pools, self.profiles = trt, [], {}, []

    def set_flag(self, flag):
        self.flags.append(flag)

    def set_memory_pool_limit(self, pool, size: int):
        self.pools[pool] = size

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class FakeBuilder:
    def __init__(self, trt, logger):
        assert isinstance(logger, FakeLogger)
        self.trt = trt
        trt.builders.append(self)

    def create_network(self, flags: int = 0) -> FakeNetwork:
        self.network = FakeNetwork(flags)
        return self.network

    def create_builder_config(self) -> FakeConfig:
        self.config = FakeConfig(self.trt)
        return self.config

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig) -> bytes | None:
        assert network.onnx is not None, "build before the ONNX was parsed"
        assert config.profiles and INPUT_NAME in config.profiles[0].shapes, "dynamic batch needs a profile"
        assert self.trt.MemoryPoolType.WORKSPACE in config.pools
        lo, _, hi = config.profiles[0].shapes[INPUT_NAME]
        header = {"version": self.trt.__version__, "min": lo, "max": hi}
        return MAGIC + json.dumps(header).encode() + b"\n" + network.onnx


class FakeEngine:
    def __init__(self, trt, header: dict, onnx_bytes: bytes):
        import onnxruntime as ort

        self.trt, self.header = trt, header
        self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        self.names = [INPUT_NAME, OUTPUT_NAME]
        # A uint8-input model (fastyolo.input_format.UINT8) is (N, S, S, 3) uint8, as TensorRT reports it.
        self.uint8_input = self.session.get_inputs()[0].type == "tensor(uint8)"

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str):
        return self.trt.TensorIOMode.INPUT if name == INPUT_NAME else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str):
        return self.trt.DataType.UINT8 if name == INPUT_NAME and self.uint8_input else self.trt.DataType.FLOAT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name != INPUT_NAME:
            return (-1, GRID, GRID, CELL_SIZE)
        return (-1, INPUT_SIZE, INPUT_SIZE, 3) if self.uint8_input else (-1, 3, INPUT_SIZE, INPUT_SIZE)

    def get_tensor_profile_shape(self, name: str, profile: int):
        assert name == INPUT_NAME and profile == 0
        lo, hi = tuple(self.header["min"]), tuple(self.header["max"])
        return [lo, lo, hi]

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine, self.addresses, self.input_shape, self.executions = engine, {}, None, 0

    def set_input_shape(self, name: str, shape) -> bool:
        assert name == INPUT_NAME, name
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        shape = tuple(shape)
        if len(shape) != 4 or not all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
            return False
        self.input_shape = shape
        return True

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        assert name in self.engine.names, name
        self.addresses[name] = int(pointer)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        trt = self.engine.trt
        device = trt.device
        assert self.input_shape is not None, "execute_async_v3 before set_input_shape"
        missing = [n for n in self.engine.names if n not in self.addresses]
        assert not missing, f"no address for I/O tensors {missing}"
        assert stream_handle in device.streams, f"unknown stream handle {stream_handle!r}"
        n = self.input_shape[0]
        dtype = np.uint8 if self.engine.uint8_input else np.float32
        images = device.resolve(self.addresses[INPUT_NAME], self.input_shape, dtype)
        grids = device.resolve(self.addresses[OUTPUT_NAME], (n, GRID, GRID, CELL_SIZE), np.float32)
        session = self.engine.session

        def work():
            grids[...] = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images)})[0]

        device.streams[stream_handle].enqueue("execute", work)
        self.executions += 1
        return True


class FakeRuntime:
    def __init__(self, trt, logger):
        assert isinstance(logger, FakeLogger)
        self.trt = trt

    def deserialize_cuda_engine(self, data: bytes):
        data = bytes(data)
        if not data.startswith(MAGIC):
            return None
        header, onnx_bytes = data[len(MAGIC):].split(b"\n", 1)
        header = json.loads(header)
        if header["version"] != self.trt.__version__:
            return None
        return FakeEngine(self.trt, header, onnx_bytes)


def FakeTensorRT(version: str = "10.8.0.43", device: QueuedHostDevice | None = None) -> SimpleNamespace:
    """A stand-in `tensorrt` module of the given version (10.x or 11.x API shape)."""
    major = int(version.split(".")[0])
    trt = SimpleNamespace(__version__=version, device=device, builders=[])
    trt.Logger = FakeLogger
    trt.DataType = enum.Enum("DataType", "FLOAT HALF INT8 INT32 UINT8")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    if major >= 11:  # strong typing only: the precision flags and EXPLICIT_BATCH are gone
        trt.BuilderFlag = enum.IntEnum("BuilderFlag", {"TF32": 0, "REFIT": 1})
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
    else:
        trt.BuilderFlag = enum.IntEnum("BuilderFlag", {"FP16": 0, "INT8": 1, "TF32": 2, "REFIT": 3})
        trt.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
        )
    trt.Builder = lambda logger: FakeBuilder(trt, logger)
    trt.OnnxParser = FakeParser
    trt.Runtime = lambda logger: FakeRuntime(trt, logger)
    return trt
