"""What `fastyolo detect` reads: an image, a folder, a glob, a video file or a camera index.

Every source yields `Frame`s. Image sources skip files OpenCV cannot decode and list them in
`skipped` (the run goes on); videos and cameras that cannot be opened raise one clear error.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fastyolo.errors import FastYoloError
from fastyolo.fileio import IMAGE_SUFFIXES, _quiet_capture, read_image

__all__ = ["IMAGE_SUFFIXES", "Frame", "ImageSource", "VideoSource", "open_source", "read_image"]


@dataclass
class Frame:
    image: np.ndarray  # HxWx3 uint8 BGR
    index: int  # 0, 1, 2, ... in reading order (skipped files take no number)
    path: Path | None = None  # the file it came from, for image sources
    source: str | None = None  # that file named uniquely: relative to the inputs' common folder


class ImageSource:
    """Image files read one by one; unreadable ones go to `skipped` as (path, reason)."""

    kind = "images"
    fps: float | None = None

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.skipped: list[tuple[Path, str]] = []
        self.names = unique_names(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for path in self.paths:
            image = read_image(path)
            if isinstance(image, str):
                self.skipped.append((path, image))
                continue
            yield Frame(image, index, path, self.names[path])
            index += 1

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unique_names(paths: list[Path]) -> dict[Path, str]:
    """Each path relative to the folder all of them share (a/x.png, b/x.png), so no two share a name;
    the file name alone when they are all in one folder."""
    if not paths:
        return {}
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.dirname(absolute[0]) if len(paths) == 1 else os.path.commonpath([os.path.dirname(a) for a in absolute])
    return {p: Path(os.path.relpath(a, root)).as_posix() for p, a in zip(paths, absolute, strict=True)}


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
                self.decoded = index
                return
            yield Frame(image, index)
            index += 1

    def truncated(self) -> str | None:
        """After the stream ended by itself: a note if it ended before the frame count its header announces."""
        decoded = getattr(self, "decoded", None)
        if decoded is None or not self.frame_count or decoded >= self.frame_count:
            return None
        return (f"{self.name} ended after {decoded} of the {self.frame_count} frames its header announces "
                "(truncated or damaged file?)")

    def close(self) -> None:
        self.capture.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
