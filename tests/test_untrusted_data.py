"""Hostile datasets and input folders (issue 21): frames outside the dataset, duplicate label rows,
truncated images, dangling and looping links. Built from real kitti_tiny frames copied into tmp_path."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import tiny_dataset

from fastyolo.cli import main
from fastyolo.datasets import load_dataset
from fastyolo.detections import Detections
from fastyolo.errors import DatasetError, FastYoloError

FRAMES = ("000000.jpg", "000001.jpg", "000002.jpg")


def _rows(labels: Path) -> list[list[str]]:
    with open(labels, newline="") as f:
        return list(csv.reader(f))


def _write_rows(labels: Path, rows: list[list[str]]) -> None:
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastyolo eval: error:") and "\n" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------ 2. frames outside the dataset


def test_frames_outside_the_dataset_are_refused_or_skipped(kitti_dir: Path, tmp_path: Path, capsys):
    data = tiny_dataset(kitti_dir, tmp_path / "data", FRAMES[:2])
    secret = tmp_path / "secret"
    secret.mkdir()
    shutil.copyfile(kitti_dir / "images" / FRAMES[2], secret / "x.jpg")
    rows = _rows(data / "labels.csv")
    good = len(rows)
    rows += [["10", "10", "50", "50", "../../secret/x.jpg", "Car", ""],  # relative to images/: tmp_path/secret
             ["10", "10", "50", "50", str(secret / "x.jpg"), "Car", ""]]  # absolute
    _write_rows(data / "labels.csv", rows)

    with pytest.raises(DatasetError, match=rf"labels.csv, line {good + 1}: frame '../../secret/x.jpg' .*outside"):
        load_dataset(data)
    samples, report = load_dataset(data, skip_malformed=True)
    assert [s.image_path.name for s in samples] == list(FRAMES[:2])
    assert all(s.image_path.parent == data / "images" for s in samples)
    assert report.malformed_rows == 2 and not report.missing_images

    # The same through the CLI: one line, exit 2 (the dataset is read before the model is).
    model = tmp_path / "model.onnx"
    model.write_bytes(b"never read")
    assert main(["eval", str(model), "--data", str(data)]) == 2
    assert "outside the dataset" in _one_line_error(capsys)

    # Autti files are held to the same rule; a path that stays inside (sub/../x) is fine.
    autti = tmp_path / "autti.txt"
    autti.write_text(f'{FRAMES[0]} 1 1 9 9 0 "car"\nsub/../{FRAMES[1]} 1 1 9 9 0 "car"\n/etc/passwd 1 1 9 9 0 "car"\n')
    with pytest.raises(DatasetError, match=r"autti.txt, line 3: frame '/etc/passwd'"):
        load_dataset(data, autti)
    samples, report = load_dataset(data, autti, skip_malformed=True)
    assert [s.image_path.name for s in samples] == list(FRAMES[:2]) and report.malformed_rows == 1


# ------------------------------------------------------------------------------ 5. duplicate label rows


def test_duplicate_label_rows_count_once(kitti_dir: Path, tmp_path: Path):
    from fastyolo.metrics import evaluate

    data = tiny_dataset(kitti_dir, tmp_path / "data", FRAMES)
    clean, clean_report = load_dataset(data)
    rows = _rows(data / "labels.csv")
    _write_rows(data / "labels.csv", rows + rows[1:])  # every box listed twice
    samples, report = load_dataset(data)

    assert report.duplicate_boxes == len(rows) - 1 and report.boxes == clean_report.boxes
    assert "duplicate" in str(report)
    for a, b in zip(samples, clean, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
    # Detections equal to the ground truth score 1.0, not 0.5 (each box found once of its two copies).
    perfect = [Detections(s.boxes, np.linspace(0.9, 0.5, len(s.boxes)).astype(np.float32), s.class_ids.astype(np.int32))
               for s in clean]
    assert evaluate(perfect, samples)["map50"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------ 6. truncated images


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_images_are_left_out_and_reported(kitti_dir: Path, tmp_path: Path):
    names = [*FRAMES, "000003.jpg", "000004.jpg"]
    data = tiny_dataset(kitti_dir, tmp_path / "data", names)
    images = data / "images"
    _truncate(images / FRAMES[0])
    assert cv2.imread(str(images / FRAMES[0])) is not None  # what happened before: a half-grey frame, trained on
    # A progressive JPEG, truncated after some of its scans, and a complete one with bytes after its end marker.
    progressive = cv2.imencode(".jpg", cv2.imread(str(images / FRAMES[1])), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1]
    (images / FRAMES[1]).write_bytes(progressive.tobytes())
    _truncate(images / FRAMES[1], 0.8)
    (images / FRAMES[2]).write_bytes(progressive.tobytes() + b"trailer after the end marker" * 10)
    # A PNG (its IEND chunk missing) under a .jpg name from labels.csv.
    png = cv2.imencode(".png", cv2.imread(str(images / "000003.jpg")))[1].tobytes()
    (images / "000003.jpg").write_bytes(png[:-12])

    samples, report = load_dataset(data)
    assert [s.image_path.name for s in samples] == [FRAMES[2], "000004.jpg"]
    assert sorted(Path(p).name for p in report.truncated_images) == [FRAMES[0], FRAMES[1], "000003.jpg"]
    assert not report.missing_images and "3 truncated" in str(report)
    assert samples[0].load_image().shape == (samples[0].height, samples[0].width, 3)

    # A frame truncated after the dataset was read: the frame cache (and every other reader) refuses it.
    pytest.importorskip("torch", reason="the frame cache is part of the [train] extra")
    from fastyolo.train.cache import build_cache

    _truncate(samples[1].image_path)
    with pytest.raises(DatasetError, match="000004.jpg: truncated"):
        build_cache(samples, mode="memory", workers=1)


def test_truncated_kitti_png_is_left_out(kitti_dir: Path, tmp_path: Path):
    data = tmp_path / "kitti"
    (data / "label_2").mkdir(parents=True)
    (data / "image_2").mkdir()
    for name in FRAMES[:2]:
        stem = Path(name).stem
        shutil.copyfile(kitti_dir / "label_2" / f"{stem}.txt", data / "label_2" / f"{stem}.txt")
        assert cv2.imwrite(str(data / "image_2" / f"{stem}.png"), cv2.imread(str(kitti_dir / "images" / name)))
    _truncate(data / "image_2" / "000000.png")
    samples, report = load_dataset(data)
    assert [s.image_path.name for s in samples] == ["000001.png"]
    assert [Path(p).name for p in report.truncated_images] == ["000000.png"]


# ------------------------------------------------------------------------------ 9. dangling and looping links


@pytest.fixture
def linked_folder(kitti_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in FRAMES[:2]:
        shutil.copyfile(kitti_dir / "images" / name, folder / name)
    (folder / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (folder / "loop.png").symlink_to("loop.png")
    return folder


def test_dangling_and_looping_links_are_listed_as_skipped(linked_folder: Path):
    from fastyolo.fileio import image_paths, sample_frames
    from fastyolo.sources import open_source

    for spec in (str(linked_folder), str(linked_folder / "*")):
        with open_source(spec) as source:
            frames = list(source)
        assert [f.path.name for f in frames] == list(FRAMES[:2])
        reasons = {p.name: why for p, why in source.skipped}
        assert reasons.keys() == {"gone.jpg", "loop.png"}, spec
        assert "broken link" in reasons["gone.jpg"] and "deleted.jpg" in reasons["gone.jpg"]
        assert "link loop" in reasons["loop.png"]
    assert {p.name for p in image_paths(linked_folder)} == {*FRAMES[:2], "gone.jpg", "loop.png"}
    # quantize --calib reads every frame of a small folder: the broken link is named, as a corrupt file is.
    with pytest.raises(FastYoloError, match="gone.jpg"):
        sample_frames(linked_folder, 10)


def test_dangling_links_in_a_dataset(kitti_dir: Path, tmp_path: Path):
    data = tmp_path / "kitti"
    (data / "label_2").mkdir(parents=True)
    shutil.copytree(kitti_dir / "images", data / "images", ignore=lambda d, names: [n for n in names if n not in FRAMES])
    for name in FRAMES[:2]:
        stem = Path(name).stem
        shutil.copyfile(kitti_dir / "label_2" / f"{stem}.txt", data / "label_2" / f"{stem}.txt")
    os.remove(data / "images" / FRAMES[1])
    (data / "images" / FRAMES[1]).symlink_to(tmp_path / "deleted.jpg")
    samples, report = load_dataset(data)
    assert [s.image_path.name for s in samples] == [FRAMES[0]]
    assert report.missing_images == [str(data / "images" / FRAMES[1])]  # the link itself, not a guessed .png

    (data / "label_2" / "000002.txt").symlink_to(tmp_path / "deleted.txt")
    with pytest.raises(DatasetError, match=r"000002.txt: broken link"):
        load_dataset(data)
