"""One place for file input and output: suffixes, output checks, atomic writes, frame readers.

Outputs:

- `check_outputs(outputs, inputs)` is called before any work starts: every output is compared
  with every input after resolving links (so `-o model.onnx` can never replace `model.onnx`,
  nor a symlink to it), and its folder is created and probed with a real temporary file, so a
  read-only folder, a path under a regular file or /proc fails in one line (`OutputError`)
  instead of a traceback after the work is done.
- `atomic_write(path)` / `atomic_path(path)` write to a temporary file beside `path` and rename
  it over `path` only when the write succeeded, so a failure or a kill never leaves half a file;
  the file gets the mode a plain `open()` would give it (0666 minus the process umask), not
  mkstemp's 0600.

Frames: `read_image` (never raises: unreadable files are skipped by callers), `image_paths`,
`VideoReader` (the one reader of video files and cameras, optionally looping; `fastyolo.sources`
wraps it for detect), `sample_frames` (frames spread evenly over a folder or a video,
for calibration and checks) and `sample_video` (the bundled real highway clip).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from fastyolo.errors import FastYoloError, OutputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm")

_UMASK_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------- outputs


def _key(path: str | os.PathLike) -> Path:
    """A path with every link resolved (the file itself if it exists, else where it would be created)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (links resolved; hard links compared by inode)."""
    if _key(a) == _key(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Create `path`'s folder and prove a file can be written there; raise OutputError in one line if not.

    `path` must not be an existing folder. Nothing is left behind except the created folders.
    """
    path = Path(os.path.expanduser(os.fspath(path)))
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder: give a file name")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = "a file is in the way where a folder is needed"
        raise OutputError(f"cannot write {what} {path}: {reason} (choose a writable location)") from None
    return path


def check_outputs(
    outputs: Iterable[tuple[str, str | os.PathLike | None]], inputs: Iterable[str | os.PathLike | None]
) -> None:
    """Before any work: no output may be an input (links resolved), two outputs may not be one file,
    and every output must be writable.

    outputs: (what, path) pairs such as ("--json", args.json); None paths and "-" (stdout) are skipped.
    inputs: every file the command reads (model, checkpoint, labels, video, images, ...).
    Raises OutputError naming the option and the input it would replace.
    """
    given = [(what, Path(os.fspath(p))) for what, p in outputs if p is not None and os.fspath(p) != "-"]
    sources = [Path(os.fspath(p)) for p in inputs if p is not None and os.fspath(p) != "-"]
    for what, out in given:
        for src in sources:
            if same_file(out, src):
                raise OutputError(f"{what} {out} is the input {src}: it would be overwritten, choose another path")
    seen: dict[Path, str] = {}
    for what, out in given:
        key = _key(out)
        if key in seen:
            raise OutputError(f"{what} and {seen[key]} are the same file {out}: give each its own path")
        seen[key] = what
    for what, out in given:
        check_writable(out, what)


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0o666 minus the process umask."""
    with _UMASK_LOCK:  # the only way to read the umask is to set it
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write (onnx.save_model, torch.save, ...); on success it
    replaces `path` in one rename with the umask's mode, on any error it is removed and `path` is untouched.

    >>> with atomic_path("model.onnx") as tmp:
    ...     onnx.save_model(proto, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(partial)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """`open(path, mode)` that only replaces `path` when the block finishes without an error.

    >>> with atomic_write("eval.json") as f:
    ...     json.dump(result, f)
    """
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write writes a whole file: mode must start with 'w', not {mode!r}")
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as stream:
        yield stream


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write `text` to `path` (UTF-8), with the umask's mode."""
    with atomic_write(path) as stream:
        stream.write(text)
    return Path(path)


def file_identity(path: str | os.PathLike) -> str:
    """What a cache key needs to notice a changed input: resolved path, size and mtime of a file, or of
    every file in a folder (the names alone would reuse a stale result)."""
    path = _key(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return f"{path}:" + ",".join(f"{p.relative_to(path)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


# ---------------------------------------------------------------------------------------------- frames


def sample_video() -> Path:
    """The bundled real highway clip (Udacity CarND, MIT)."""
    return Path(str(resources.files("fastyolo") / "data" / "highway_clip.mp4"))


def read_image(path: str | os.PathLike) -> np.ndarray | str:
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


def link_problem(path: str | os.PathLike) -> str | None:
    """Why `path`, a symbolic link, leads to no file ("broken link to X", "link loop"), or None."""
    if not os.path.islink(path) or os.path.exists(path):
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "link loop (the link leads back to itself)"
    return f"broken link to {os.readlink(path)} (no such file)"


def image_paths(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """The image files (IMAGE_SUFFIXES, any case) in `folder`, sorted; with `recursive`, in its subfolders too.
    Broken and looping links with an image suffix are included, so that readers list them as unreadable."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or link_problem(p)))


def _quiet_capture(target: str | int, threads: int | None = None) -> cv2.VideoCapture:
    """VideoCapture without OpenCV's multi-line backend warnings: our own error says what failed.

    threads: the decoder's threads (None: OpenCV's default, one per core)."""
    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        if threads is not None:
            capture = cv2.VideoCapture(target, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, int(threads)])
            if capture.isOpened():
                return capture
            capture.release()  # a backend without that setting: open it as usual
        return cv2.VideoCapture(target)
    finally:
        log.setLogLevel(level)


class Closing:
    """Closed on leaving a `with` block (detect stacks sources and sinks in an ExitStack)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoReader:
    """Frames of a video file or a camera, in order: the one frame reader of bench, detect and calibration.

    source: a video file or a camera index. loop (files only): rewind at the end instead of stopping
    (bench loops its clip). fps: the stream's rate where it is sane, else 30 (some containers and
    cameras report 0 or nonsense); frame_count: what the file's header announces (0 where unknown,
    and for a camera). After a read ended the stream, `truncated()` says whether a file stopped short
    of its header's count. `what` names the expected content in the error for a file OpenCV cannot open.
    decode_threads (files): None keeps OpenCV's default, a decoder thread per core, whose frame
    threading decodes ahead while the caller works; 1 when the caller decodes on a thread of its own
    beside the network (fastyolo.prefetch): extra decoder threads then only take cores from the
    network (the bundled clip decodes in the same 1.6 ms a frame on 1.0 core instead of 1.3-1.5).
    """

    def __init__(self, source: str | os.PathLike | int, loop: bool = True, *, what: str = "a video",
                 decode_threads: int | None = None):
        if isinstance(source, int):
            self.path: Path | None = None
            self.name, self.kind = f"camera {source}", "camera"
            self.capture = _quiet_capture(source)
            if not self.capture.isOpened():
                self.capture.release()
                raise FastYoloError(f"camera {source} cannot be opened: no camera at that index, or it is busy "
                                    "(check it is connected and free, or pass a video file instead)")
        else:
            self.path = Path(source)
            self.name, self.kind = str(self.path), "video"
            if not self.path.is_file():
                raise FastYoloError(f"video not found: {self.path}")
            self.capture = _quiet_capture(str(self.path), decode_threads)
            if not self.capture.isOpened():
                self.capture.release()
                raise FastYoloError(f"OpenCV cannot open {self.path} as {what} (corrupt, or an unsupported "
                                    "format/codec)")
        self.loop = loop and self.kind == "video"
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and self.kind == "video" else 0
        fps = float(self.capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps if 0.5 < fps < 1000 else 30.0
        self.position = 0  # index of the next frame read returns
        self.ended = False  # a read found the end of the stream (without looping)

    def read(self) -> np.ndarray | None:
        """The next BGR frame, or None at the end of the stream (with `loop`, only if nothing decodes at all)."""
        ok, frame = self.capture.read()
        if (not ok or frame is None) and self.loop:
            self.rewind()
            ok, frame = self.capture.read()
        if not ok or frame is None:
            self.ended = True
            return None
        self.position += 1
        return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        """Frames until the stream ends (forever on a looping reader)."""
        while (frame := self.read()) is not None:
            yield frame

    def truncated(self) -> str | None:
        """After the stream ended by itself: a note if it ended before the frame count its header announces."""
        if not self.ended or not self.frame_count or self.position >= self.frame_count:
            return None
        return (f"{self.name} ended after {self.position} of the {self.frame_count} frames its header announces "
                "(truncated or damaged file?)")

    def seek(self, index: int) -> None:
        self.capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        self.position, self.ended = index, False

    def rewind(self) -> None:
        self.seek(0)

    def close(self) -> None:
        self.capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def spread(count: int, limit: int) -> list[int]:
    """`limit` indices spread evenly over range(count) (all of them if there are fewer)."""
    if count <= limit:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, limit)})


def sample_frames(source: str | os.PathLike, limit: int) -> list[np.ndarray]:
    """Up to `limit` real BGR frames spread evenly over a folder of images (searched recursively) or a video."""
    source = Path(source)
    if limit < 1:
        raise ValueError(f"need at least 1 frame, got limit={limit}")
    if source.is_dir():
        paths = image_paths(source, recursive=True)
        if not paths:
            raise FastYoloError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {source}: point it at real frames")
        frames = []
        for i in spread(len(paths), limit):
            frame = read_image(paths[i])
            if isinstance(frame, str):
                why = link_problem(paths[i]) or frame
                raise FastYoloError(f"cannot read {paths[i]} as an image ({why}): remove it from the folder")
            frames.append(frame)
        return frames
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        with VideoReader(source, loop=False) as reader:
            wanted = set(spread(reader.frame_count, limit))
            frames = []
            for index in range(reader.frame_count):
                frame = reader.read()
                if frame is None:
                    break
                if index in wanted:
                    frames.append(frame)
        if not frames:
            raise FastYoloError(f"OpenCV decoded no frame of {source}: give a folder of images instead")
        return frames
    raise FastYoloError(f"{source} is neither a folder of images nor a video file ({', '.join(VIDEO_SUFFIXES)})")


# ---------------------------------------------------------------------------------------------- signals


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, docker stop) turned into an interrupt, so outputs are closed as on Ctrl-C."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread, so the
    `finally` blocks that finalise videos and close files run; the previous handler comes back after."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
