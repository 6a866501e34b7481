"""fastyolo.fileio.VideoReader is the one frame reader: bench's looping reader and detect's video source."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fastyolo.errors import FastYoloError
from fastyolo.fileio import VideoReader
from fastyolo.sources import open_source


def _write(path: Path, clip_path: Path, frames: int) -> Path:
    cap = cv2.VideoCapture(str(clip_path))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 180))
    for _ in range(frames):
        writer.write(cv2.resize(cap.read()[1], (320, 180)))
    writer.release()
    cap.release()
    return path


def test_detect_source_and_bench_reader_give_the_same_frames(clip_path: Path):
    with VideoReader(clip_path, loop=False) as reader:
        direct = list(reader)
        assert reader.truncated() is None and reader.position == len(direct) == reader.frame_count > 0
        assert 0.5 < reader.fps < 1000
    with open_source(str(clip_path)) as source:
        frames = list(source)
        assert source.kind == "video" and source.paths == [clip_path] and len(source) == len(direct)
        assert source.truncated() is None and source.fps == pytest.approx(reader.fps)
    assert [f.index for f in frames] == list(range(len(direct)))
    assert all(np.array_equal(f.image, d) for f, d in zip(frames, direct, strict=True))


def test_looping_reader_rewinds_and_counts(clip_path: Path):
    with VideoReader(clip_path) as reader:
        first = reader.read()
        for _ in range(reader.frame_count - 1):
            reader.read()
        again = reader.read()  # past the end: back to the first frame
        assert np.array_equal(first, again) and reader.position == 1 and not reader.ended
        reader.seek(5)
        assert reader.position == 5


def test_truncated_file_is_noticed_by_the_reader(clip_path: Path, tmp_path: Path):
    full = _write(tmp_path / "full.avi", clip_path, 20)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with VideoReader(cut, loop=False) as reader:
        assert reader.truncated() is None  # nothing read yet: nothing to say
        count = len(list(reader))
        assert 0 < count < 20 and reader.frame_count == 20
        assert f"ended after {count} of the 20 frames" in reader.truncated()


def test_unopenable_sources_fail_in_one_line(tmp_path: Path):
    with pytest.raises(FastYoloError, match="video not found"):
        VideoReader(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(FastYoloError, match="cannot open .*junk.mp4 as a video "):
        VideoReader(junk)
    with pytest.raises(FastYoloError, match="camera 9 cannot be opened"):
        VideoReader(9)


def test_one_decoder_thread_gives_the_same_frames(clip_path: Path):
    """decode_threads=1 (bench's overlapped mode, detect's videos) changes who decodes, not what: every pixel."""
    with VideoReader(clip_path, loop=False) as default, VideoReader(clip_path, loop=False, decode_threads=1) as single:
        assert single.capture.get(cv2.CAP_PROP_N_THREADS) == 1
        frames = 0
        for a, b in zip(default, single, strict=True):
            assert np.array_equal(a, b)
            frames += 1
        assert frames == default.frame_count
