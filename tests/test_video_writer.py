"""Annotated videos people can play (H.264 through PyAV), that fail loudly (issue 21, item 10 and its video part).

Every written file is decoded back (PyAV and OpenCV): every frame there, at the input's rate and size, close to the
frames given. A full disk is a real failed write: RLIMIT_FSIZE makes the kernel refuse writes past a size (EFBIG)
as it would with ENOSPC, inside FFmpeg's own C writes, without root or a small filesystem.
"""

from __future__ import annotations

import contextlib
import stat
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastyolo.errors import FastYoloError
from fastyolo.fileio import file_mode, sample_video

av = pytest.importorskip("av", reason="the H.264 writer needs PyAV (pip install av)")
resource = pytest.importorskip("resource", reason="the full-disk tests limit the file size with RLIMIT_FSIZE (POSIX)")

FRAMES = 12


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """The first FRAMES frames of the bundled real highway clip (960x540, 25 FPS)."""
    capture = cv2.VideoCapture(str(sample_video()))
    out = [capture.read()[1] for _ in range(FRAMES)]
    capture.release()
    assert all(f is not None for f in out)
    return out


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG, as on a full disk (SIGXFSZ ignored, as Python does by default)."""
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def decoded(path: Path) -> tuple[list[np.ndarray], dict]:
    """Every frame of `path` as BGR (PyAV), and what its video stream says of itself."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        images = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        cc = stream.codec_context
        return images, {"codec": cc.name, "pix_fmt": cc.pix_fmt, "rate": stream.average_rate,
                        "size": (cc.width, cc.height)}


def write(path: Path, frames: list[np.ndarray], fps: float = 25.0):
    from fastyolo.writers import VideoSink

    with VideoSink(path, fps, (frames[0].shape[1], frames[0].shape[0])) as sink:
        for frame in frames:
            sink.write(frame)
    return sink


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "h264"), (".mkv", "h264"), (".mov", "h264"),
                                               (".webm", "vp9"), (".avi", "mjpeg")])
def test_written_video_plays_every_frame(tmp_path, frames, suffix, codec):
    out = tmp_path / f"out{suffix}"
    sink = write(out, frames)
    assert sink.written and sink.frames == FRAMES
    images, stream = decoded(out)
    assert stream["codec"] == codec
    if codec != "mjpeg":
        assert stream["pix_fmt"] == "yuv420p"  # what browsers and every player decode
    assert stream["rate"] == 25 and stream["size"] == (960, 540)
    assert len(images) == FRAMES
    assert min(psnr(a, b) for a, b in zip(frames, images, strict=True)) > 32  # the frames given, not garbage
    capture = cv2.VideoCapture(str(out))  # OpenCV (detect, bench) reads it too
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == FRAMES
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left
    assert stat.S_IMODE(out.stat().st_mode) == file_mode()  # the umask's mode, not mkstemp's 0600


def test_mp4_is_h264_with_its_index_first_for_browsers(tmp_path, frames):
    out = tmp_path / "web.mp4"
    write(out, frames[:3])
    data = out.read_bytes()
    assert decoded(out)[1]["codec"] == "h264"
    assert 0 <= data.find(b"moov") < data.find(b"mdat")  # faststart: a browser plays it while it loads


def test_fractional_rate_and_odd_size(tmp_path, frames):
    odd = [f[:539, :959].copy() for f in frames[:4]]
    out = tmp_path / "ntsc.mp4"
    sink = write(out, odd, fps=30000 / 1001)
    assert sink.size == (960, 540)  # 4:2:0 needs even sides: one copied column and row
    images, stream = decoded(out)
    assert stream["rate"] == Fraction(30000, 1001) and len(images) == 4
    assert psnr(images[0][:539, :959], odd[0]) > 32


def test_full_disk_is_one_line_and_leaves_no_file(tmp_path, frames):
    """An earlier out.mp4 stays as it was; nothing that looks finished is left."""
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier run's video")
    with file_size_limit(60_000), pytest.raises(FastYoloError) as caught:
        write(out, frames)
    message = str(caught.value)
    assert "\n" not in message and "File too large" in message and str(out) in message, message
    assert out.read_bytes() == b"an earlier run's video"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_full_disk_in_a_streamed_container_removes_it(tmp_path, frames):
    out = tmp_path / "out.mkv"
    with file_size_limit(60_000), pytest.raises(FastYoloError, match="failed after"):
        write(out, frames)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_still_finishes_a_playable_mp4(tmp_path, frames):
    from fastyolo.writers import VideoSink

    out = tmp_path / "cut.mp4"
    with pytest.raises(KeyboardInterrupt), VideoSink(out, 25.0, (960, 540)) as sink:
        for i, frame in enumerate(frames):
            if i == 5:
                raise KeyboardInterrupt  # Ctrl-C (detect turns SIGTERM into one too)
            sink.write(frame)
    assert sink.written and len(decoded(out)[0]) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["cut.mp4"]


def test_opencv_fallback_where_pyav_is_absent(tmp_path, frames, monkeypatch):
    """Without PyAV the video is OpenCV's MPEG-4 Part 2, and a failed write is still caught (its header read back)."""
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    out = tmp_path / "old.mp4"
    sink = write(out, frames[:4])
    assert "OpenCV" in sink.codec
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 4 and capture.read()[0]
    capture.release()
    with file_size_limit(60_000), pytest.raises(FastYoloError, match="does not read back"):
        write(tmp_path / "full.avi", frames)
    assert not (tmp_path / "full.avi").exists()
    with pytest.raises(FastYoloError, match="pip install av"):
        write(tmp_path / "web.webm", frames[:1])


def test_best_available_encoder(monkeypatch):
    from fastyolo.writers import H264, pick_codec

    assert pick_codec(av, H264) == "libx264"  # this PyAV wheel's FFmpeg has x264
    real = av.codec.Codec

    def without_x264(name, mode="r"):
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", without_x264)
    assert pick_codec(av, H264) in ("libopenh264", "mpeg4")


# ------------------------------------------------------------------------------ through `fastyolo detect`


@pytest.fixture()
def clip(tmp_path, frames) -> Path:
    path = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (960, 540))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_detect_writes_h264_and_says_so(tmp_path, untrained_r18, clip, capsys):
    from fastyolo.cli import main

    out = tmp_path / "out.mp4"
    rc = main(["detect", str(clip), "--model", str(untrained_r18), "-o", str(out), "--threads", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"wrote {out} ({FRAMES} frames, 960x540 at 25 FPS, H.264)" in err
    images, stream = decoded(out)
    assert stream["codec"] == "h264" and len(images) == FRAMES


def test_detect_to_a_full_disk_is_one_line_exit_2_and_no_file(tmp_path, untrained_r18, clip, capsys, monkeypatch):
    """Before: exit 0, 'wrote out.mp4 (12 frames ...)', and a file that decodes to nothing."""
    import fastyolo.writers
    from fastyolo.cli import main

    real = fastyolo.writers.VideoSink
    limits = contextlib.ExitStack()

    def sink_on_a_full_disk(*args, **kwargs):  # the model is loaded: from here on the disk is "full"
        limits.enter_context(file_size_limit(40_000))
        return real(*args, **kwargs)

    monkeypatch.setattr(fastyolo.writers, "VideoSink", sink_on_a_full_disk)
    out = tmp_path / "out.mp4"
    with limits:
        rc = main(["detect", str(clip), "--model", str(untrained_r18), "-o", str(out), "--threads", "1",
                   "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastyolo detect: error: writing the video"), err
    assert "wrote" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.avi"]  # nothing that looks finished
