"""What `fastyolo detect` reads: an image, a folder, a glob, a video file or a camera index.

Every source yields `Frame`s. Image sources skip files OpenCV cannot decode and list them in
`skipped` (the run goes on), broken and looping links among them; videos and cameras that cannot be
opened raise one clear error.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastyolo.errors import FastYoloError
from fastyolo.fileio import IMAGE_SUFFIXES, Closing, VideoReader, image_paths, link_problem, read_image

__all__ = ["IMAGE_SUFFIXES", "Frame", "ImageSource", "VideoSource", "open_source", "read_image"]


@dataclass
class Frame:
    image: np.ndarray  # HxWx3 uint8 BGR
    index: int  # 0, 1, 2, ... in reading order (skipped files take no number)
    path: Path | None = None  # the file it came from, for image sources
    source: str | None = None  # that file named uniquely: relative to the inputs' common folder


class ImageSource(Closing):
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
                self.skipped.append((path, link_problem(path) or image))
                continue
            yield Frame(image, index, path, self.names[path])
            index += 1

    def close(self) -> None:
        pass


def unique_names(paths: list[Path]) -> dict[Path, str]:
    """Each path relative to the folder all of them share (a/x.png, b/x.png), so no two share a name;
    the file name alone when they are all in one folder."""
    if not paths:
        return {}
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.dirname(absolute[0]) if len(paths) == 1 else os.path.commonpath([os.path.dirname(a) for a in absolute])
    return {p: Path(os.path.relpath(a, root)).as_posix() for p, a in zip(paths, absolute, strict=True)}


class VideoSource(Closing):
    """Frames of a video file or a camera as `Frame`s, in order, until the stream ends.

    The reading is fastyolo.fileio.VideoReader's (the same reader bench uses); this adds detect's
    source interface: Frame objects, `frame_count` (None where unknown), `skipped`, `paths`.
    """

    def __init__(self, reader: VideoReader):
        self.reader = reader
        self.name, self.kind, self.fps = reader.name, reader.kind, reader.fps
        self.skipped: list[tuple[Path, str]] = []
        self.frame_count = reader.frame_count or None
        self.paths = [reader.path] if reader.path is not None else []

    def __len__(self) -> int:
        return self.frame_count or 0

    def __iter__(self) -> Iterator[Frame]:
        for index, image in enumerate(self.reader):
            yield Frame(image, index)

    def truncated(self) -> str | None:
        """After the stream ended by itself: a note if it ended before the frame count its header announces."""
        return self.reader.truncated()

    def close(self) -> None:
        self.reader.close()


Source = ImageSource | VideoSource


def open_source(spec: str) -> Source:
    """Interpret SOURCE: camera index ("0"), image file, folder of images, glob pattern, or video file."""
    if spec.strip().isdigit():
        return open_camera(int(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        paths = image_paths(path)  # broken links too: listed as skipped, not left out unsaid
        if not paths:
            raise FastYoloError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}: "
                                "pass a folder of images, a video or a glob")
        return ImageSource(paths)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageSource([path])
        return open_video(path)
    if glob.has_magic(spec):
        paths = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file() or link_problem(p))
        if not paths:
            raise FastYoloError(f"no files match {spec!r}: check the pattern (quote it so the shell does not expand it)")
        return ImageSource(paths)
    if link_problem(path):
        raise FastYoloError(f"{spec}: {link_problem(path)}")
    raise FastYoloError(f"source not found: {spec} (expected an image, a folder, a glob, a video file or a camera index)")


def open_video(path: Path) -> VideoSource:
    # detect decodes videos on its prefetch thread, beside the network: one decoder thread.
    return VideoSource(VideoReader(path, loop=False, what="a video or image", decode_threads=1))


def open_camera(index: int) -> VideoSource:
    return VideoSource(VideoReader(index, loop=False))
