"""Where `fastyolo detect` writes: an annotated video, annotated images, JSON lines or CSV.

Every sink writes as it goes and is closed in a `finally`, so an interrupted run leaves what was
done: a playable video of the frames so far, complete JSON/CSV lines.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import IO, NoReturn

import cv2
import numpy as np

from fastyolo.detections import Detections
from fastyolo.errors import FastYoloError
from fastyolo.fileio import IMAGE_SUFFIXES, Closing, _quiet_capture, check_outputs, file_mode


@dataclass(frozen=True)
class Container:
    """How one video suffix is written."""

    muxer: str  # FFmpeg's name of the container format
    codecs: tuple[str, ...]  # PyAV encoders by preference: the first the installed FFmpeg has is used
    in_place: bool  # plays at every moment, so written in place (see VideoSink)
    opencv: str | None  # the fourcc of the OpenCV fallback, where PyAV is absent (None: PyAV only)


# H.264 (libx264, yuv420p) plays in browsers, VLC, ffmpeg and OpenCV; OpenCV's pip build can only write
# MPEG-4 Part 2 ("mp4v"), which browsers do not play, and reports no write errors (hence PyAV, the fallback
# where it is absent). WebM holds VP9; AVI keeps the Motion-JPEG OpenCV wrote (H.264 in AVI has no timestamps).
H264 = ("libx264", "libopenh264", "mpeg4")
CONTAINERS = {
    ".mp4": Container("mp4", H264, False, "mp4v"),
    ".m4v": Container("mp4", H264, False, "mp4v"),
    ".mov": Container("mov", H264, False, "mp4v"),
    ".mkv": Container("matroska", H264, True, "mp4v"),
    ".webm": Container("webm", ("libvpx-vp9",), True, None),
    ".avi": Container("avi", ("mjpeg",), True, "MJPG"),
}
# veryfast: detect's own work must not wait on the encoder (x264's default, medium, costs several times more per
# frame for a smaller file); crf 23 is x264's default quality. VP9 in realtime mode at constant quality (crf, no
# bitrate target). Motion JPEG at q 2-3, the quality OpenCV's MJPG wrote (42 dB on the bundled clip).
ENCODER_OPTIONS = {
    "libx264": {"preset": "veryfast", "crf": "23"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "30", "b": "0"},
    "mjpeg": {"qmax": "3"},
}
CODEC_NAMES = {"libx264": "H.264", "libopenh264": "H.264", "mpeg4": "MPEG-4 Part 2", "libvpx-vp9": "VP9",
               "mjpeg": "Motion JPEG"}


def refuse_overwrite(output: Path, inputs: list[Path], what: str) -> None:
    """Raise if writing `output` would replace one of the inputs (links resolved), or it cannot be written."""
    check_outputs([(what, output)], inputs)


class Sink(Closing):
    """Where detect writes its results; closed on leaving a `with` block."""


def _pyav() -> ModuleType | None:
    try:
        import av
    except ImportError:
        return None
    return av


def pick_codec(av: ModuleType, names: tuple[str, ...]) -> str | None:
    """The first of `names` this FFmpeg (PyAV's wheel) can encode with, or None."""
    for name in names:
        try:
            av.codec.Codec(name, "w")
        except ValueError:  # UnknownCodecError: not in this build
            continue
        return name
    return None


class _PyAVEncoder:
    """Frames to a container through PyAV (FFmpeg), which raises on a failed write."""

    def __init__(self, av: ModuleType, target: Path, container: Container, codec: str, fps: float,
                 size: tuple[int, int]):
        self.av, self.pts = av, 0
        # faststart: the index moves to the front when the file is finalised, so a browser plays it while loading
        options = {"movflags": "+faststart"} if container.muxer in ("mp4", "mov") else {}
        self.output = av.open(str(target), "w", format=container.muxer, options=options)
        try:
            self.stream = self.output.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))  # 29.97: 30000/1001
            self.stream.width, self.stream.height = size
            self.stream.options = dict(ENCODER_OPTIONS.get(codec, {}))
            if codec == "mjpeg":
                self.stream.pix_fmt = "yuvj420p"  # JPEG's full range
            else:
                # 4:2:0 for every player; tagged BT.601, the matrix FFmpeg converts BGR with (and OpenCV reads back
                # with), so players that read the tag show the colours detect drew
                self.stream.pix_fmt = "yuv420p"
                self.stream.codec_context.colorspace, self.stream.codec_context.color_range = 5, 1  # BT.601, TV range
            self.stream.codec_context.open()  # now: a setting the encoder refuses fails before the first frame
        except BaseException:
            self.abort()
            raise

    def write(self, image: np.ndarray) -> None:
        frame = self.av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, self.pts = self.pts, self.pts + 1
        self.output.mux(self.stream.encode(frame))

    def finish(self) -> None:
        self.output.mux(self.stream.encode(None))  # the frames the encoder still holds
        self.output.close()  # the trailer (and for faststart, the index moved to the front)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.output.close()


class _OpenCVEncoder:
    """Frames through OpenCV's VideoWriter, where PyAV is absent. It reports no write error, so `finish` reads
    the header back (no frame decoded) and raises if the file does not announce the frames written."""

    def __init__(self, target: Path, fourcc: str, fps: float, size: tuple[int, int]):
        self.target, self.frames = target, 0
        self.writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self.writer.isOpened():
            raise OSError(f"OpenCV cannot open a {fourcc} writer")

    def write(self, image: np.ndarray) -> None:
        self.writer.write(image)
        self.frames += 1

    def finish(self) -> None:
        self.writer.release()
        capture = _quiet_capture(str(self.target))
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else -1.0
        capture.release()
        if abs(count - self.frames) > 1:  # Matroska's count is estimated from the duration: one frame of slack
            raise OSError(f"the file does not read back with the {self.frames} frames written (disk full?)")

    def abort(self) -> None:
        self.writer.release()


class VideoSink(Sink):
    """An annotated video with the input's size and frame rate: H.264 through PyAV (.mp4 .m4v .mov .mkv), VP9
    (.webm) or Motion JPEG (.avi); OpenCV's MPEG-4 Part 2 / Motion JPEG where PyAV is absent.

    A file at the output path always plays. MP4 and MOV keep their index at the end, so they are written to a
    hidden temporary file beside the output and renamed over it when finalised: at the end, on Ctrl-C or
    SIGTERM (detect turns it into an interrupt) and on any other error after the first frame. Matroska,
    WebM and AVI play at every moment, so they are written in place, and a run killed outright (kill -9)
    leaves the frames done. A failed write (a full disk) raises FastYoloError in one line and removes the
    incomplete file (an earlier file at the path of an MP4/MOV stays as it was).
    Odd sides are padded by one copied row/column (4:2:0 needs even sides); `size` is what is written.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        container = CONTAINERS.get(path.suffix.lower())
        if container is None:
            raise FastYoloError(f"cannot write a video as {path.name}: use one of {', '.join(CONTAINERS)} (e.g. out.mp4)")
        self.path, self.frames, self.written, self.closed = path, 0, False, False
        self.frame_size = size
        self.size = (size[0] + size[0] % 2, size[1] + size[1] % 2)
        av = _pyav()
        codec = pick_codec(av, container.codecs) if av is not None else None
        if codec is None and container.opencv is None:
            why = "PyAV is not installed" if av is None else f"this PyAV's FFmpeg has no {container.codecs[0]} encoder"
            raise FastYoloError(f"cannot write {path.name}: {why} (pip install av), or write an .mp4")
        self.codec = CODEC_NAMES.get(codec, codec) if codec else f"{container.opencv} through OpenCV (pip install av)"
        self._errors: tuple[type[BaseException], ...] = (OSError, av.FFmpegError) if av is not None else (OSError,)
        path.parent.mkdir(parents=True, exist_ok=True)
        if container.in_place:
            self.target = path
        else:  # the real suffix last: OpenCV picks the container from the name
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
            os.close(fd)
            self.target = Path(name)
        try:
            self.encoder = (_PyAVEncoder(av, self.target, container, codec, fps, self.size) if codec else
                            _OpenCVEncoder(self.target, container.opencv, fps, self.size))
        except self._errors as exc:
            self.target.unlink(missing_ok=True)
            raise FastYoloError(f"cannot write the video {path}: {_reason(exc)} (choose another -o)") from None

    def write(self, image: np.ndarray, name: Path | None = None) -> None:
        if (image.shape[1], image.shape[0]) != self.frame_size:
            # A stream that changes resolution mid-way: keep the video valid, one size throughout.
            image = cv2.resize(image, self.frame_size, interpolation=cv2.INTER_AREA)
        if self.size != self.frame_size:
            dx, dy = self.size[0] - self.frame_size[0], self.size[1] - self.frame_size[1]
            image = cv2.copyMakeBorder(image, 0, dy, 0, dx, cv2.BORDER_REPLICATE)
        try:
            self.encoder.write(image)
        except self._errors as exc:
            self._fail(exc)
        self.frames += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.encoder.finish()
            if self.target != self.path:
                os.chmod(self.target, file_mode())  # mkstemp's 0600 -> what open() would have given
                os.replace(self.target, self.path)
        except self._errors as exc:
            self._fail(exc)
        except BaseException:  # a second Ctrl-C while finalising: no half-finished MP4 under a hidden name
            if self.target != self.path:
                self.target.unlink(missing_ok=True)
            raise
        self.written = True

    def _fail(self, exc: BaseException) -> NoReturn:
        self.closed = True
        self.encoder.abort()
        self.target.unlink(missing_ok=True)
        kept = f"; the earlier {self.path.name} is untouched" if self.target != self.path and self.path.exists() else ""
        raise FastYoloError(f"writing the video {self.path} failed after {self.frames} frames: {_reason(exc)}; the "
                            f"incomplete file was removed{kept} (free some space or choose another -o)") from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ImageSink(Sink):
    """Annotated images in a folder (created), under the input's file names; or one image file for one input."""

    def __init__(self, folder: Path, inputs: list[Path]):
        single = folder.suffix.lower() in IMAGE_SUFFIXES
        if single and len(inputs) > 1:
            raise FastYoloError(f"{len(inputs)} images are written to a folder, not to {folder.name}: pass -o FOLDER")
        if folder.suffix.lower() in CONTAINERS:
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
