"""The trained model that ships inside the package: what `Detector()` and the CLI use without a model.

`fastyolo/weights/` holds it as an fp32 ONNX and its int8 (Q/DQ) quantisation, with a model card
(weights/README.md: what it was trained on, its held-out figures, what it is bad at, its licence).
"""

from __future__ import annotations

from pathlib import Path

from fastyolo.errors import ModelError

WEIGHTS = Path(__file__).resolve().parent / "weights"
NAME = "roads-lite0"  # EfficientNet-Lite0 + conv head, trained on PandaSet city frames and the Udacity highway clip
FILES = {"fp32": f"{NAME}.onnx", "bf16": f"{NAME}.onnx", "int8": f"{NAME}.int8.onnx"}  # bf16: the fp32 file + hint


def shipped_model(precision: str = "fp32") -> Path:
    """Path of the packaged model for `precision` (fp32/bf16: the fp32 file; int8: the quantised one)."""
    if precision not in FILES:
        raise ValueError(f"the packaged model comes as {', '.join(FILES)}, not {precision!r}")
    path = WEIGHTS / FILES[precision]
    if not path.is_file():
        raise ModelError(f"the packaged model {path} is missing (a broken install?): reinstall fastyolo, or pass a model")
    return path


def card() -> str:
    """The model card (weights/README.md)."""
    return (WEIGHTS / "README.md").read_text()
