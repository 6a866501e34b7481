"""What `fastyolo detect` reads: an image, a folder, a glob, a video file or a camera index.

Every source yields `Frame`s. Image sources skip files OpenCV cannot decode and list them in
`skipped` (the run goes on); videos and cameras that cannot be opened raise one clear error.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fastyolo.errors import FastYoloError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Frame:
    image: np.ndarray  # HxWx3 uint8 BGR
    index: int  # 0, 1, 2, ... in reading order (skipped files take no number)
    path: Path | None = None  # the file it came from, for image sources


class ImageSource:
    """Image files read one by one; unreadable ones go to `skipped` as (path, reason)."""

    kind = "images"
    fps: float | None = None

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.skipped: list[tuple[Path, str]] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for path in self.paths:
            image = read_image(path)
            if isinstance(image, str):
                self.skipped.append((path, image))
                continue
            yield Frame(image, index, path)
            index += 1

    def close(self) -> None:
        pass


def read_image(path: Path) -> np.ndarray | str:
    """The image as BGR uint8, or the reason it cannot be read (no exception: callers skip it)."""
    try:
        data = np.fromfile(path, np.uint8)  # imdecode: no OpenCV warnings on stderr, any path encoding
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if data.size == 0:
        return "empty file"
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # grey, 16-bit and alpha images come out as 8-bit BGR
    if image is None:
        return "not an image OpenCV can decode"
    return image


class VideoSource:
    """Frames of a video file or a camera, in order, until the stream ends."""

    def __init__(self, capture: cv2.VideoCapture, name: str, kind: str):
        self.capture, self.name, self.kind = capture, name, kind
        self.skipped: list[tuple[Path, str]] = []
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps if 0.5 < fps < 1000 else 30.0  # some containers and cameras report 0 or nonsense
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and kind == "video" else None
        self.paths = [Path(name)] if kind == "video" else []

    def __len__(self) -> int:
        return self.frame_count or 0

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, image = self.capture.read()
            if not ok or image is None:
                return
            yield Frame(image, index)
            index += 1

    def close(self) -> None:
        self.capture.release()


Source = ImageSource | VideoSource


def open_source(spec: str) -> Source:
    """Interpret SOURCE: camera index ("0"), image file, folder of images, glob pattern, or video file."""
    if spec.strip().isdigit():
        return open_camera(int(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise FastYoloError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}: "
                                "pass a folder of images, a video or a glob")
        return ImageSource(paths)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageSource([path])
        return open_video(path)
    if glob.has_magic(spec):
        paths = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not paths:
            raise FastYoloError(f"no files match {spec!r}: check the pattern (quote it so the shell does not expand it)")
        return ImageSource(paths)
    raise FastYoloError(f"source not found: {spec} (expected an image, a folder, a glob, a video file or a camera index)")


def _quiet_capture(target: str | int) -> cv2.VideoCapture:
    """VideoCapture without OpenCV's multi-line backend warnings: our own error says what failed."""
    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(target)
    finally:
        log.setLogLevel(level)


def open_video(path: Path) -> VideoSource:
    capture = _quiet_capture(str(path))
    if not capture.isOpened():
        capture.release()
        raise FastYoloError(f"OpenCV cannot open {path} as a video or image (corrupt, or an unsupported format/codec)")
    return VideoSource(capture, str(path), "video")


def open_camera(index: int) -> VideoSource:
    capture = _quiet_capture(index)
    if not capture.isOpened():
        capture.release()
        raise FastYoloError(f"camera {index} cannot be opened: no camera at that index, or it is busy "
                            "(check it is connected and free, or pass a video file instead)")
    return VideoSource(capture, f"camera {index}", "camera")
