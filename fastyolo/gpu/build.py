"""ONNX -> TensorRT engine with the name-based API of TensorRT 10 and 11.

Precision is a property of the ONNX (fp32, fp16 from `fastyolo export --precision fp16`, int8
Q/DQ from `--precision int8`): TensorRT 11 removed the FP16/INT8 builder flags and always builds
strongly typed networks; on TensorRT 10 the network is created STRONGLY_TYPED too, so the
same ONNX gives the same precision on both and no precision flag is ever set.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import ModuleType

from fastyolo.errors import ModelError
from fastyolo.gpu.availability import require_gpu_stack, tensorrt_major
from fastyolo.gpu.engine_file import engine_info, write_sidecar
from fastyolo.input_format import input_shape
from fastyolo.layout import INPUT_NAME
from fastyolo.model_file import read_onnx


def network_flags(trt: ModuleType) -> int:
    """create_network flags: none on 11 (strong typing is always on), STRONGLY_TYPED on 10,
    plus EXPLICIT_BATCH before 10, where implicit batch was still the default."""
    major = tensorrt_major(trt)
    if major >= 11:
        return 0
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return flags


def _parse(trt: ModuleType, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0] if errors else "no error message"
        raise ModelError(f"TensorRT cannot parse {onnx_path} ({len(errors)} errors; first: {first})")


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    max_batch: int = 8,
    workspace_gb: float = 2.0,
    opt_batch: int = 1,
    tensorrt: ModuleType | None = None,
    device=None,
) -> dict:
    """Build `engine_path` (+ its .json sidecar) from a fastyolo ONNX; returns the sidecar contents.

    The optimisation profile covers batch 1..max_batch, tuned for `opt_batch` (1: frame by frame
    video). `tensorrt` and `device` are for tests (a double of the API and of the GPU).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if max_batch < 1 or not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= opt_batch <= max_batch, got opt_batch={opt_batch}, max_batch={max_batch}")
    if workspace_gb <= 0:
        raise ValueError(f"workspace must be positive (GB), got {workspace_gb}")
    model = read_onnx(onnx_path)  # our layout, readable: fail before touching the GPU
    trt = tensorrt or require_gpu_stack()
    if device is None:
        from fastyolo.gpu.device import NumbaCudaDevice

        device = NumbaCudaDevice()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    _parse(trt, network, logger, onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    # the input's shape follows the model's input format (normalised NCHW floats or uint8 NHWC pixels)
    shape = tuple(input_shape(model.input_format, 1)[1:])
    profile.set_shape(INPUT_NAME, (1, *shape), (opt_batch, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")

    engine_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=engine_path.parent, prefix=f".{engine_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(plan))
        os.replace(tmp, engine_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    info = engine_info(
        tensorrt_version=trt.__version__, gpu=device.name, compute_capability=device.compute_capability,
        max_batch=max_batch, onnx=onnx_path.resolve(), model_metadata=model.metadata, workspace_gb=workspace_gb,
    )
    write_sidecar(engine_path, info)
    return info
