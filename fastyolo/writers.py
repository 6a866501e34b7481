"""Where `fastyolo detect` writes: an annotated video, annotated images, JSON lines or CSV.

Every sink writes as it goes and is closed in a `finally`, so an interrupted run leaves what was
done: a playable video of the frames so far, complete JSON/CSV lines.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from fastyolo.detections import Detections
from fastyolo.errors import FastYoloError
from fastyolo.fileio import IMAGE_SUFFIXES, Closing, check_outputs

# OpenCV's bundled FFmpeg writes MPEG-4 Part 2 ("mp4v") into .mp4 and Motion-JPEG into .avi;
# releasing the writer finalises the container, so even a run stopped by Ctrl-C (or SIGTERM) plays.
# Browsers do not play MPEG-4 Part 2: the pip OpenCV builds have no H.264 encoder (avc1 fails to
# open, with FFmpeg noise on stderr), so re-encode for the web: ffmpeg -i out.mp4 -c:v libx264 -pix_fmt yuv420p web.mp4
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


def refuse_overwrite(output: Path, inputs: list[Path], what: str) -> None:
    """Raise if writing `output` would replace one of the inputs (links resolved), or it cannot be written."""
    check_outputs([(what, output)], inputs)


class Sink(Closing):
    """Where detect writes its results; closed on leaving a `with` block."""


class VideoSink(Sink):
    """An annotated video with the input's size and frame rate."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        fourcc = FOURCC.get(path.suffix.lower())
        if fourcc is None:
            raise FastYoloError(f"cannot write a video as {path.name}: use one of {', '.join(FOURCC)} (e.g. out.mp4)")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.size, self.frames = path, size, 0
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self.writer.isOpened():
            raise FastYoloError(f"OpenCV cannot write a {fourcc} video to {path} (is the folder writable?)")

    def write(self, image: np.ndarray, name: Path | None = None) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            # A stream that changes resolution mid-way: keep the video valid, one size throughout.
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        self.writer.release()


class ImageSink(Sink):
    """Annotated images in a folder (created), under the input's file names; or one image file for one input."""

    def __init__(self, folder: Path, inputs: list[Path]):
        single = folder.suffix.lower() in IMAGE_SUFFIXES
        if single and len(inputs) > 1:
            raise FastYoloError(f"{len(inputs)} images are written to a folder, not to {folder.name}: pass -o FOLDER")
        if folder.suffix.lower() in FOURCC:
            raise FastYoloError(f"images are written to a folder, not to {folder.name}: pass -o FOLDER")
        if not single and folder.is_file():
            raise FastYoloError(f"output {folder} is a file: pass -o FOLDER for annotated images")
        self.folder, self.frames = (folder.parent if single else folder), 0
        self.names = {inputs[0]: folder} if single else self._plan(inputs)
        sources = {p.resolve() for p in inputs}
        for path, out in self.names.items():
            if out.resolve() in sources:
                raise FastYoloError(f"annotated image {out} would overwrite the input {path}: choose another -o")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FastYoloError(f"cannot create the output folder {self.folder}: {exc.strerror or exc}") from None
        check_outputs([("-o", out) for out in self.names.values()][:1], [])  # writable: probed once

    def _plan(self, inputs: list[Path]) -> dict[Path, Path]:
        """One output file per input, same name; same-named inputs from different folders get a number."""
        names, used = {}, set()
        for path in inputs:
            suffix = path.suffix if path.suffix.lower() in IMAGE_SUFFIXES else ".png"
            name, n = path.stem + suffix, 1
            while name.lower() in used:
                name = f"{path.stem}_{n}{suffix}"
                n += 1
            used.add(name.lower())
            names[path] = self.folder / name
        return names

    def write(self, image: np.ndarray, name: Path | None = None) -> None:
        out = self.names[name]
        ok, data = cv2.imencode(out.suffix, image)
        if not ok:
            raise FastYoloError(f"OpenCV cannot encode {out.name}")
        data.tofile(out)
        self.frames += 1


class JsonlSink(Sink):
    """One line per frame: {"frame": i, "source": "dir/name.jpg" (images), "detections": [...]}; "-" is stdout.

    source: the image's path relative to the folder all inputs share (unique within a run).
    """

    def __init__(self, path: Path | str):
        self.stream: IO[str] = sys.stdout if str(path) == "-" else _open_text(Path(path))

    def write(self, index: int, detections: Detections, source: str | None = None) -> None:
        row: dict = {"frame": index}
        if source is not None:
            row["source"] = str(source)
        row["detections"] = detections.to_dicts()
        self.stream.write(json.dumps(row) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not sys.stdout:
            self.stream.close()


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection"): a file named
# '=HYPERLINK(...).jpg' would become a live link. Text cells get a leading apostrophe, which spreadsheets hide.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(text: str) -> str:
    """A text cell a spreadsheet shows as text: neutralised with a leading ' where it would start a formula."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


class CsvSink(Sink):
    """One row per detection: frame, source, track_id, label, score, x1, y1, x2, y2.

    Text cells (source, label) that a spreadsheet would run as a formula start with ' (text_cell); numbers,
    negative ones too, are written as they are.
    """

    COLUMNS = ("frame", "source", "track_id", "label", "score", "x1", "y1", "x2", "y2")

    def __init__(self, path: Path | str):
        self.stream: IO[str] = sys.stdout if str(path) == "-" else _open_text(Path(path), newline="")
        self.writer = csv.writer(self.stream)
        self.writer.writerow(self.COLUMNS)

    def write(self, index: int, detections: Detections, source: str | None = None) -> None:
        source = "" if source is None else text_cell(str(source))
        for d in detections:
            track = "" if d.track_id is None else d.track_id
            self.writer.writerow([index, source, track, text_cell(d.label), f"{d.score:.4f}",
                                  *(f"{v:.2f}" for v in d.box)])
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not sys.stdout:
            self.stream.close()


def _open_text(path: Path, newline: str | None = None) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", encoding="utf-8", newline=newline)
