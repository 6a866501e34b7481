"""Frame checks and the one preprocessing step every backend and the trainer share."""

from __future__ import annotations

import cv2
import numpy as np

from fastyolo.errors import FrameError
from fastyolo.layout import INPUT_SIZE, MEAN, STD

# Per channel in the network's RGB order: (pixel - 255 mean) / (255 std), folded into one multiply-add.
_SCALE = (1.0 / (255.0 * np.asarray(STD, np.float32))).astype(np.float32)
_SHIFT = (-np.asarray(MEAN, np.float32) / np.asarray(STD, np.float32)).astype(np.float32)


def check_frame(frame: object) -> np.ndarray:
    """Return `frame` if it is an HxWx3 uint8 BGR image, else raise FrameError saying what it is."""
    if frame is None:
        raise FrameError("frame is None (a failed cv2.imread or VideoCapture.read?): expected an HxWx3 uint8 BGR image")
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame is a {type(frame).__name__}: expected a numpy HxWx3 uint8 BGR image")
    if frame.ndim != 3 or frame.shape[2] != 3:
        kind = "grayscale" if frame.ndim == 2 else ("RGBA/BGRA" if frame.ndim == 3 and frame.shape[2] == 4 else "")
        raise FrameError(
            f"frame has shape {frame.shape}{' (' + kind + ')' if kind else ''}: expected HxWx3 BGR "
            "(convert with cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR / COLOR_BGRA2BGR))"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise FrameError(f"frame is empty (shape {frame.shape}): expected HxWx3 with H, W > 0")
    if frame.dtype != np.uint8:
        raise FrameError(
            f"frame dtype is {frame.dtype}: expected uint8 0..255 BGR (e.g. (frame * 255).clip(0, 255).astype(np.uint8))"
        )
    return frame


def resize_rgb(frame: np.ndarray) -> np.ndarray:
    """Squash a BGR frame to INPUT_SIZE x INPUT_SIZE RGB uint8 (no letterbox, as in training)."""
    small = cv2.resize(frame, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def normalize(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised network input, into `out` if given."""
    if out is None:
        out = np.empty((3, rgb.shape[0], rgb.shape[1]), np.float32)
    chw = rgb.transpose(2, 0, 1)
    np.multiply(chw, _SCALE[:, None, None], out=out)
    out += _SHIFT[:, None, None]
    return out


def preprocess(frames: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """Checked BGR frames -> (N, 3, INPUT_SIZE, INPUT_SIZE) float32 network input."""
    if out is None or out.shape[0] != len(frames):
        out = np.empty((len(frames), 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    for i, frame in enumerate(frames):
        normalize(resize_rgb(check_frame(frame)), out[i])
    return out
