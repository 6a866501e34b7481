"""OpenVINO on the CPU: reads the ONNX directly; one compiled model per batch size, static shapes."""

from __future__ import annotations

import threading

import numpy as np

from fastyolo.backends.base import available_cpus, check_precision, wrong_output
from fastyolo.errors import ModelError
from fastyolo.input_format import NORMALIZED, UINT8, input_shape
from fastyolo.layout import INPUT_NAME, MEAN, STD, output_shape
from fastyolo.model_file import ModelFile
from fastyolo.precisions import openvino_hints

# OpenVINO's CPU plugin silently runs bf16 where the CPU has it unless told otherwise, so the
# hint is always set from the requested precision (the table in fastyolo.precisions).
_HINTS = openvino_hints()


def cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def uint8_preprocessing(model):
    """An OpenVINO model that takes normalised NCHW RGB floats -> one that takes uint8 NHWC BGR pixels.

    OpenVINO's PrePostProcessor puts convert, BGR -> RGB, mean/scale and the layout change into the
    compiled graph, where the CPU plugin fuses them with the first convolution's input reorder.
    """
    from openvino import Layout, Type
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(model)
    tensor = ppp.input(INPUT_NAME)
    tensor.tensor().set_element_type(Type.u8).set_layout(Layout("NHWC")).set_color_format(ColorFormat.BGR)
    tensor.model().set_layout(Layout("NCHW"))
    tensor.preprocess().convert_element_type(Type.f32).convert_color(ColorFormat.RGB) \
        .mean([255.0 * m for m in MEAN]).scale([255.0 * s for s in STD])
    return ppp.build()


def cpu_pinning(threads: int | None) -> bool:
    """Whether OpenVINO may pin its threads to cores: only when they are all of this process's CPUs.

    OpenVINO pins by default and picks the same first cores in every process, so two `--threads 1` processes (two
    Ray workers, two cameras) shared one core of two: measured, each ran at 66% CPU and the pair no faster than one.
    """
    return threads is None or int(threads) >= available_cpus()


class OpenVINOSession:
    """Thread-safe: each thread gets its own infer request per batch size (an OpenVINO request runs
    one inference at a time and raises 'Infer Request is busy' otherwise); compiling a new batch
    size is serialised by a lock. Cost: one request (its output buffers) per calling thread."""

    name = "openvino"

    def __init__(self, model: ModelFile, precision: str, threads: int, *, ppp: bool = False):
        import openvino as ov

        check_precision(model.precision, precision, self.name)
        self.core = ov.Core()
        if precision == "bf16" and not cpu_has_bf16():
            precision = "fp32"  # no bf16 instructions: fp32 it is, and `precision` says so
        self.config = {
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "ENABLE_CPU_PINNING": cpu_pinning(threads),
        }
        try:
            self.model = self.core.read_model(str(model.path))
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot read {model.path}: {str(exc).splitlines()[0]}") from None
        self.input_format = model.input_format
        if ppp:
            if self.input_format != NORMALIZED:
                raise ValueError(f"{model.path.name} already takes {self.input_format} input: "
                                 "OpenVINO's PrePostProcessor is for models that take normalised floats")
            self.model = uint8_preprocessing(self.model)
            self.input_format = UINT8
        self._local = threading.local()  # .requests: batch -> this thread's infer request
        self._lock = threading.Lock()
        self._compiled: dict[object, object] = {}  # batch -> latency model; ("throughput", batch) -> async model
        self.streams = 1
        self._compile(1)
        self._check_output(model)
        ran = self._compiled[1].get_property("INFERENCE_PRECISION_HINT").to_string()
        self.precision = "int8" if model.precision == "int8" else {"bf16": "bf16", "f32": "fp32"}.get(ran, ran)
        self.threads = int(self._compiled[1].get_property("INFERENCE_NUM_THREADS"))

    def _check_output(self, model: ModelFile) -> None:
        """OpenVINO infers the output's shape from the graph, not from the header: a model whose header declares
        the layout but that computes another is refused before any frame (the pipeline checks every output too)."""
        output = self._compiled[1].output(0)
        shape = tuple(d.get_length() if d.is_static else "?" for d in output.get_partial_shape())
        kind = output.get_element_type().get_type_name()
        if shape != output_shape(1) or kind != "f32":
            raise wrong_output(model.path, shape, {"f32": "float32"}.get(kind, kind), 1)

    def _compile(self, batch: int):
        with self._lock:
            compiled = self._compiled.get(batch)
            if compiled is None:
                model = self.model.clone()
                model.reshape({INPUT_NAME: input_shape(self.input_format, batch)})
                compiled = self._compiled[batch] = self.core.compile_model(model, "CPU", self.config)
        return compiled

    def _request(self, batch: int):
        """This thread's infer request for `batch` frames (made on first use)."""
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        request = requests.get(batch)
        if request is None:
            request = requests[batch] = self._compile(batch).create_infer_request()
        return request

    def throughput_runners(self, batch: int, jobs: int | None = None) -> tuple[list, int]:
        """(runners, streams): one `run(images) -> grid` per infer request of a THROUGHPUT-compiled model.

        Each runner owns its request, so different runners may run at once on different threads; one
        runner runs one batch at a time. Synchronous `infer` (it releases the GIL), not
        AsyncInferQueue: its callbacks take the GIL on OpenVINO's threads, and tearing the compiled
        model down then deadlocked (OpenVINO 2026.4).
        """
        def runner(request):
            def run(images: np.ndarray) -> np.ndarray:
                request.infer({0: images}, share_inputs=True)
                return request.get_output_tensor(0).data.copy()
            return run

        requests = self.throughput_requests(batch, jobs)
        return [runner(r) for r in requests], self.streams

    def throughput_requests(self, batch: int, jobs: int | None = None) -> list:
        """Infer requests for batches of `batch` on a model compiled with the THROUGHPUT hint.

        OpenVINO then splits the threads into streams (2 single-thread streams on 2 cores) and
        several requests run at once; `jobs` defaults to the plugin's optimal number of requests.
        """
        key = ("throughput", batch)
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is None:
                model = self.model.clone()
                model.reshape({INPUT_NAME: input_shape(self.input_format, batch)})
                config = {k: v for k, v in self.config.items() if k != "NUM_STREAMS"}
                compiled = self.core.compile_model(model, "CPU", {**config, "PERFORMANCE_HINT": "THROUGHPUT"})
                self._compiled[key] = compiled
        jobs = jobs or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.streams = int(compiled.get_property("NUM_STREAMS"))
        return [compiled.create_infer_request() for _ in range(max(1, jobs))]

    def run(self, images: np.ndarray) -> np.ndarray:
        request = self._request(images.shape[0])
        request.infer({0: images}, share_inputs=True)
        return request.get_output_tensor(0).data.copy()
