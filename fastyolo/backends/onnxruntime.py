"""onnxruntime on the CPU (explicit CPUExecutionProvider)."""

from __future__ import annotations

import numpy as np

from fastyolo.backends.base import check_precision
from fastyolo.errors import ModelError
from fastyolo.layout import INPUT_NAME, OUTPUT_NAME
from fastyolo.model_file import ModelFile


class OnnxRuntimeSession:
    name = "onnxruntime"

    def __init__(self, model: ModelFile, precision: str, threads: int):
        import onnxruntime as ort

        check_precision(model.precision, precision, self.name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Errors only: its warnings (a declared output shape the graph does not compute, initializers it drops) are
        # stderr noise beside fastyolo's own one-line checks (fastyolo.pipeline.check_output refuses such a model).
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load {model.path}: {str(exc).splitlines()[0]}") from None
        self.precision = model.precision
        self.input_format = model.input_format  # onnxruntime takes the model's input as it is
        self.threads = int(threads)

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
