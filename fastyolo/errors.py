"""Errors with one-line messages that name the problem and the fix; the CLI prints them as they are."""


class FastYoloError(Exception):
    """Base class of every error fastyolo raises on purpose."""


class ModelError(FastYoloError, ValueError):
    """A model or checkpoint file is missing, corrupt, or not of the expected layout."""


class DatasetError(FastYoloError, ValueError):
    """A dataset folder or labels file is missing, of an unknown format, or has a malformed row."""


class FrameError(FastYoloError, ValueError):
    """A frame is not an HxWx3 uint8 BGR image."""


class MissingDependencyError(FastYoloError, ImportError):
    """An optional dependency (an extra) is needed for this call."""


class GpuUnavailableError(FastYoloError, RuntimeError):
    """The GPU path needs an NVIDIA GPU with TensorRT and numba-cuda; none is usable here."""


class UsageError(FastYoloError, ValueError):
    """An option is out of range or does not go with another one (the CLI exits with code 2)."""


class OutputError(FastYoloError, OSError):
    """An output path cannot be written, or writing it would replace one of the inputs."""
