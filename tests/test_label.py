"""`fastyolo label`: teacher-labelled datasets that load_dataset reads; refusals and bad options in one line."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fastyolo_layout_onnx

from fastyolo.cli import main
from fastyolo.commands.label import CSV_HEADER, changed_fraction
from fastyolo.datasets import load_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # as conftest.py
TEACHER = SHARED_DATA / "teacher" / "yolox_nano.onnx"
PICODET = SHARED_DATA / "teacher" / "picodet_s_416_coco.onnx"
UDACITY = SHARED_DATA / "udacity_test_images"
FULL_FRAME = ("--no-tiles", "--flip", "none")  # one view per frame: quick, where the views are not the point


@pytest.fixture(scope="module")
def teacher(teacher_path: Path) -> Path:
    return teacher_path


@pytest.fixture(scope="module")
def udacity(udacity_dir: Path) -> Path:
    return udacity_dir


def _label(capsys, *argv) -> tuple[int, str]:
    rc = main(["label", *map(str, argv), "--no-progress", *FULL_FRAME])
    return rc, capsys.readouterr().err


def _load(out: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no header mix-up (or any other) warning
        return load_dataset(out)


def _one_line_error(rc: int, err: str, pattern: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastyolo label: error: "), err
    assert "Traceback" not in err and re.search(pattern, lines[0]), lines[0]


def test_label_udacity_images_end_to_end(capsys, tmp_path: Path, teacher: Path, udacity: Path):
    out = tmp_path / "ds"
    rc, err = _label(capsys, udacity, "--teacher", teacher, "-o", out)
    assert rc == 0, err
    assert (out / "labels.csv").read_text().splitlines()[0] == ",".join(CSV_HEADER)
    samples, report = _load(out)
    assert report.format.startswith("crowdAI") and not report.warnings and not report.missing_images
    assert report.frames >= 4 and report.boxes_per_class["Car"] >= 6  # measured: 5 frames, 10 cars
    manifest = json.loads((out / "sources.json").read_text())
    files = {f["file"]: f for f in manifest["frames"]}
    assert {s.image_path.name for s in samples} == set(files)
    for s in samples:
        meta = files[s.image_path.name]
        assert re.fullmatch(r"udacity_test_images_\d{6}\.jpg", s.image_path.name)
        assert s.image_path.name == f"udacity_test_images_{meta['frame']:06d}.jpg"
        original = cv2.imread(meta["source"])
        written = s.load_image()
        assert written.shape == original.shape
        assert np.abs(written.astype(int) - original).mean() < 3  # high-quality JPEG
        assert len(s.boxes) == meta["boxes"] and (s.boxes[:, 2:] > s.boxes[:, :2]).all()
    assert f"wrote {report.frames} frames" in err and "Car" in err


def test_label_video_every_nth_frame(capsys, tmp_path: Path, teacher: Path, clip_path: Path):
    out = tmp_path / "clip"
    rc, err = _label(capsys, clip_path, "--teacher", teacher, "-o", out, "--every", 100, "--max-frames", 2)
    assert rc == 0, err
    samples, report = _load(out)
    manifest = json.loads((out / "sources.json").read_text())
    assert report.frames == 2 and report.boxes >= 2
    frames = [f["frame"] for f in manifest["frames"]]
    assert all(f % 100 == 0 for f in frames) and frames == sorted(frames)
    assert [s.image_path.name for s in samples] == [f"highway_clip_{f:06d}.jpg" for f in frames]
    assert manifest["every"] == 100 and manifest["complete"] and manifest["sources"][0]["kind"] == "video"
    capture = cv2.VideoCapture(str(clip_path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, frames[0])
    ok, expected = capture.read()
    capture.release()
    assert ok and np.abs(samples[0].load_image().astype(int) - expected).mean() < 3  # the frame it names


def test_near_duplicates_are_skipped_and_sources_named_apart(capsys, tmp_path: Path, teacher: Path, udacity: Path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):  # the same picture three times: one frame kept
        shutil.copy(udacity / "test1.jpg", frames / f"f{i}.jpg")
    single = udacity / "test1.jpg"
    out = tmp_path / "ds"
    rc, err = _label(capsys, frames, single, single, "--teacher", teacher, "-o", out)
    assert rc == 0, err
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["frames_000000.jpg", "test1_000000.jpg", "test1_2_000000.jpg"]
    assert "2 near-duplicates skipped" in err
    image = cv2.imread(str(single))
    thumb = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (160, 90)).astype(np.int16)
    assert changed_fraction(thumb, thumb) == 0.0 and changed_fraction(thumb, thumb + 13) == 1.0
    rc, err = _label(capsys, frames, "--teacher", teacher, "-o", tmp_path / "all", "--dedup", 0)
    assert rc == 0 and len(list((tmp_path / "all" / "images").iterdir())) == 3


def test_refuses_existing_dataset_and_inputs(capsys, tmp_path: Path, teacher: Path, udacity: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(udacity / "test1.jpg", inp / "test1.jpg")
    before = (inp / "test1.jpg").read_bytes()
    out = tmp_path / "ds"
    assert _label(capsys, inp, "--teacher", teacher, "-o", out)[0] == 0
    csv_before = (out / "labels.csv").read_bytes()
    _one_line_error(*_label(capsys, inp, "--teacher", teacher, "-o", out), r"already holds a dataset")
    assert (out / "labels.csv").read_bytes() == csv_before
    _one_line_error(*_label(capsys, inp, "--teacher", teacher, "-o", inp), r"is or contains the input")
    _one_line_error(*_label(capsys, inp / "test1.jpg", "--teacher", teacher, "-o", tmp_path), r"is or contains")
    _one_line_error(*_label(capsys, inp, "--teacher", teacher, "-o", inp / "sub"), r"inside the input folder")
    _one_line_error(*_label(capsys, f"{inp}/*.jpg", "--teacher", teacher, "-o", inp), r"is or contains the input")
    other = tmp_path / "busy"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    _one_line_error(*_label(capsys, inp, "--teacher", teacher, "-o", other), r"not empty")
    assert (inp / "test1.jpg").read_bytes() == before and sorted(p.name for p in inp.iterdir()) == ["test1.jpg"]


def test_bad_options_one_line(capsys, tmp_path: Path, teacher: Path, udacity: Path):
    out = tmp_path / "ds"
    _one_line_error(*_label(capsys, udacity, "--teacher", teacher, "-o", out, "--every", 0), r"--every must be")
    _one_line_error(*_label(capsys, udacity, "--teacher", teacher, "-o", out, "--conf", 2), r"--conf must be")
    _one_line_error(*_label(capsys, udacity, "--teacher", teacher, "-o", out, "--dedup", 1.5), r"--dedup must be")
    _one_line_error(*_label(capsys, udacity, "--teacher", tmp_path / "none.onnx", "-o", out), r"teacher model not found")
    foreign = tmp_path / "fastyolo.onnx"
    fastyolo_layout_onnx(foreign)
    _one_line_error(*_label(capsys, udacity, "--teacher", foreign, "-o", out), r"not a COCO teacher in a layout")
    _one_line_error(*_label(capsys, udacity, "--teacher", teacher, "--teacher", tmp_path / "none.onnx", "-o", out),
                    r"teacher model not found: .*none.onnx")
    _one_line_error(*_label(capsys, udacity, "--teacher", teacher, "--teacher-weights", "1,2", "-o", out),
                    r"--teacher-weights has 2 values for 1 --teacher")
    _one_line_error(*_label(capsys, udacity, "--teacher", teacher, "--teacher-weights", "x", "-o", out),
                    r"--teacher-weights: expected numbers")
    _one_line_error(*_label(capsys, udacity, "--teacher", teacher, "--view-conf", 0.5, "--conf", 0.3, "-o", out),
                    r"--view-conf 0.5 is above --conf 0.3")
    _one_line_error(*_label(capsys, udacity, "--teacher", teacher, "--tile-overlap", 1, "-o", out), r"--tile-overlap")
    _one_line_error(*_label(capsys, udacity, "--teacher", teacher, "--tile-zoom", 1, 1, "-o", out),
                    r"--tile-zoom: need distinct zooms in \[1, 4\]")
    _one_line_error(*_label(capsys, udacity, "--teacher", teacher, "--fusion-iou", 0, "-o", out), r"--fusion-iou")
    _one_line_error(*_label(capsys, tmp_path / "missing.mp4", "--teacher", teacher, "-o", out), r"source not found")
    _one_line_error(*_label(capsys, "0", "--teacher", teacher, "-o", out), r"not cameras")
    assert not out.exists()  # nothing written by a refused run


def test_two_teachers_on_tiles_and_flips(capsys, tmp_path: Path, teacher: Path, kitti_dir: Path):
    """The default views (full frame, 12 tiles at zoom 1.5, all flipped) of two teachers, fused: the labels are
    what fastyolo.teacher_views.Ensemble gives, and sources.json names every teacher and view."""
    from fastyolo.teacher import Teacher
    from fastyolo.teacher_views import Ensemble

    if not PICODET.is_file():
        pytest.skip(f"PicoDet teacher not found at {PICODET}")
    frames = tmp_path / "kitti"
    frames.mkdir()
    shutil.copy(kitti_dir / "images" / "000038.jpg", frames / "000038.jpg")  # 11 cars, 4 of them small
    out = tmp_path / "ds"
    rc = main(["label", str(frames), "--teacher", str(PICODET), "--teacher", str(teacher), "-o", str(out),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    samples, report = _load(out)
    manifest = json.loads((out / "sources.json").read_text())
    assert [t["layout"] for t in manifest["teachers"]] == ["picodet", "yolox"]
    assert [t["path"] for t in manifest["teachers"]] == [str(PICODET), str(teacher)]
    views = manifest["views"]["1242x375"]
    assert list(views) == [str(PICODET), str(teacher)]
    for names in views.values():
        assert names[:3] == ["full", "full flipped", "tile 0,0 277x277 zoom 1.5"] and len(names) == 26
    assert manifest["fusion"] == "wbf" and manifest["tiles"] and manifest["flip"] == "all"
    assert manifest["tile_zooms"] == [1.5]
    ensemble = Ensemble([Teacher(PICODET, conf=manifest["view_conf"]), Teacher(teacher, conf=manifest["view_conf"])])
    expected = ensemble.detect(cv2.imread(str(frames / "000038.jpg")))
    assert len(samples) == 1 and len(samples[0].boxes) == len(expected) >= 6
    np.testing.assert_allclose(samples[0].boxes, np.rint(expected.boxes), atol=0)
    assert samples[0].class_ids.tolist() == expected.class_ids.tolist()
