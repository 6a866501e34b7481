"""Finding TensorRT and a CUDA GPU, or saying in one line what is missing and what to do."""

from __future__ import annotations

from types import ModuleType

from fastyolo.errors import GpuUnavailableError

FIX = "install 'fastyolo[gpu]' on a machine with an NVIDIA GPU, or run the .onnx on the CPU (Detector('model.onnx'))"


def load_tensorrt() -> ModuleType:
    """The `tensorrt` module, or GpuUnavailableError naming what is missing."""
    try:
        import tensorrt
    except ImportError:
        raise GpuUnavailableError(f"TensorRT is not installed: {FIX}") from None
    except Exception as exc:  # the wheel is there but its CUDA libraries are not loadable
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise GpuUnavailableError(f"TensorRT cannot load ({reason}): {FIX}") from None
    return tensorrt


def tensorrt_major(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


def gpu_problem() -> str | None:
    """None if numba-cuda sees a CUDA GPU, else what is missing."""
    try:
        from numba import cuda
    except ImportError:
        return "numba-cuda is not installed"
    if cuda.config.ENABLE_CUDASIM:
        return "numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1), there is no real GPU behind it"
    try:
        if cuda.is_available():
            return None
    except Exception:  # a broken driver install raises instead of returning False
        pass
    return "no NVIDIA GPU with a working CUDA driver is visible"


def require_gpu_stack(*, need_tensorrt: bool = True) -> ModuleType | None:
    """Check TensorRT and the GPU together, so one line names everything that is missing."""
    missing = []
    trt = None
    if need_tensorrt:
        try:
            trt = load_tensorrt()
        except GpuUnavailableError:
            missing.append("TensorRT is not installed")
    problem = gpu_problem()
    if problem:
        missing.append(problem)
    if missing:
        raise GpuUnavailableError(f"{' and '.join(missing)}: {FIX}")
    return trt
