"""Frame checks and the one preprocessing step every backend and the trainer share."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fastyolo.errors import FrameError
from fastyolo.layout import INPUT_SIZE, MEAN, STD

# Per channel in the network's RGB order: (pixel - 255 mean) / (255 std), folded into one multiply-add.
# x * NORMALIZE_SCALE + NORMALIZE_SHIFT (float32) is (x / 255 - MEAN) / STD: every normaliser uses these.
NORMALIZE_SCALE = (1.0 / (255.0 * np.asarray(STD, np.float32))).astype(np.float32)
NORMALIZE_SHIFT = (-np.asarray(MEAN, np.float32) / np.asarray(STD, np.float32)).astype(np.float32)


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


@dataclass(frozen=True)
class Resized:
    """A frame already squashed to the network's size (BGR uint8), with the original frame's size.

    What `prepare` returns: the part of preprocessing that needs only the frame, so that it can run
    on another thread (decode + resize one frame ahead) and the Detector skips it.
    """

    image: np.ndarray  # (INPUT_SIZE, INPUT_SIZE, 3) uint8 BGR
    width: int  # of the original frame: boxes come back in its pixels
    height: int


def resize_bgr(frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Squash a BGR frame to INPUT_SIZE x INPUT_SIZE BGR uint8 (no letterbox, as in training)."""
    return cv2.resize(frame, (INPUT_SIZE, INPUT_SIZE), dst=out, interpolation=cv2.INTER_LINEAR)


def prepare(frame: object) -> Resized:
    """Check and resize one frame (thread-safe, allocates its output): the host's per-frame work."""
    frame = check_frame(frame)
    return Resized(resize_bgr(frame), frame.shape[1], frame.shape[0])


def small_bgr(item: np.ndarray | Resized) -> np.ndarray:
    """The network-sized BGR image of a frame or of an already Resized one."""
    return item.image if isinstance(item, Resized) else resize_bgr(check_frame(item))


def frame_size(item: np.ndarray | Resized) -> tuple[int, int]:
    """(width, height) of the original frame."""
    return (item.width, item.height) if isinstance(item, Resized) else (item.shape[1], item.shape[0])


def resize_rgb(frame: np.ndarray | Resized) -> np.ndarray:
    """Squash a BGR frame (or take a Resized one) to INPUT_SIZE x INPUT_SIZE RGB uint8."""
    return cv2.cvtColor(small_bgr(frame), cv2.COLOR_BGR2RGB)


def normalize(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised network input, into `out` if given."""
    if out is None:
        out = np.empty((3, rgb.shape[0], rgb.shape[1]), np.float32)
    chw = rgb.transpose(2, 0, 1)
    np.multiply(chw, NORMALIZE_SCALE[:, None, None], out=out)
    out += NORMALIZE_SHIFT[:, None, None]
    return out


def preprocess(frames: list[np.ndarray | Resized], out: np.ndarray | None = None) -> np.ndarray:
    """BGR frames (or Resized ones) -> (N, 3, INPUT_SIZE, INPUT_SIZE) float32 normalised network input."""
    if out is None or out.shape[0] != len(frames):
        out = np.empty((len(frames), 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    for i, frame in enumerate(frames):
        normalize(resize_rgb(frame), out[i])
    return out


def preprocess_uint8(frames: list[np.ndarray | Resized], out: np.ndarray | None = None) -> np.ndarray:
    """BGR frames (or Resized ones) -> (N, INPUT_SIZE, INPUT_SIZE, 3) uint8 BGR: a uint8-input model's input."""
    if out is None or out.shape[0] != len(frames):
        out = np.empty((len(frames), INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    for i, frame in enumerate(frames):
        if isinstance(frame, Resized):
            out[i] = frame.image
        else:
            resize_bgr(check_frame(frame), out[i])  # straight into the batch: no copy
    return out


def preprocess_for(fmt: str, frames: list[np.ndarray | Resized], out: np.ndarray | None = None) -> np.ndarray:
    """The input a model of input format `fmt` (fastyolo.input_format) takes for these frames."""
    from fastyolo.input_format import NORMALIZED

    return preprocess(frames, out) if fmt == NORMALIZED else preprocess_uint8(frames, out)
