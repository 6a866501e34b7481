"""`fastyolo detect` end to end on real frames with an untrained ResNet-18 (plumbing, not accuracy)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastyolo.cli import main
from fastyolo.detections import Detections
from fastyolo.draw import annotate, class_colour
from fastyolo.errors import FastYoloError
from fastyolo.sources import open_source

CONF = "0.3"  # the untrained net scores up to ~0.5: a handful of boxes per frame


def count_frames(path: Path) -> tuple[int, float, int, int]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot reopen {path}"
    n = 0
    while cap.read()[0]:
        n += 1
    fps, w, h = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    return n, fps, w, h


@pytest.fixture(scope="module")
def short_video(tmp_path_factory, clip_path) -> Path:
    """The first 8 frames of the real clip as a small video (its size and 25 FPS)."""
    path = tmp_path_factory.mktemp("video") / "short.mp4"
    cap = cv2.VideoCapture(str(clip_path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (960, 540))
    for _ in range(8):
        writer.write(cap.read()[1])
    writer.release()
    cap.release()
    return path


@pytest.fixture()
def image_folder(tmp_path, kitti_images) -> Path:
    """Three real KITTI frames, a corrupt .jpg and a text file."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for p in kitti_images[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_video_with_tracking_writes_annotated_video_and_jsonl(tmp_path, untrained_r18, short_video):
    out, jsonl = tmp_path / "out" / "tracked.mp4", tmp_path / "dets.jsonl"
    rc = main(["detect", str(short_video), "--model", str(untrained_r18), "-o", str(out), "--jsonl", str(jsonl),
               "--track", "--conf", CONF, "--threads", "1", "--no-progress"])
    assert rc == 0
    assert count_frames(out) == (8, 25.0, 960, 540)  # the input's size and frame rate, every frame
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(8))
    dets = [d for r in rows for d in r["detections"]]
    assert dets and all(set(d) == {"box", "score", "label", "track_id"} for d in dets)
    assert all(0 <= d["box"][0] <= d["box"][2] <= 960 and 0 <= d["box"][1] <= d["box"][3] <= 540 for d in dets)
    # The drawn frames differ from the input where boxes are.
    cap_in, cap_out = cv2.VideoCapture(str(short_video)), cv2.VideoCapture(str(out))
    a, b = cap_in.read()[1], cap_out.read()[1]
    assert np.abs(a.astype(int) - b.astype(int)).max() > 100


def test_interrupted_video_run_leaves_a_playable_file(tmp_path, untrained_r18, short_video, monkeypatch, capsys):
    import fastyolo.draw

    calls = {"n": 0}
    real = fastyolo.draw.annotate

    def annotate_then_interrupt(frame, dets, **kw):
        if calls["n"] == 5:
            raise KeyboardInterrupt  # Ctrl-C while the 6th frame is drawn
        calls["n"] += 1
        return real(frame, dets, **kw)

    monkeypatch.setattr(fastyolo.draw, "annotate", annotate_then_interrupt)
    out = tmp_path / "cut.mp4"
    rc = main(["detect", str(short_video), "--model", str(untrained_r18), "-o", str(out), "--conf", CONF,
               "--threads", "1", "--no-progress"])
    assert rc == 130
    assert count_frames(out)[0] == 5
    assert "5 frames" in capsys.readouterr().err


def test_image_folder_skips_unreadable_files_and_keeps_inputs(tmp_path, untrained_r18, image_folder, capsys):
    before = {p.name: p.read_bytes() for p in image_folder.iterdir()}
    out, jsonl = tmp_path / "annotated" / "nested", tmp_path / "d.jsonl"
    rc = main(["detect", str(image_folder), "--model", str(untrained_r18), "-o", str(out), "--jsonl", str(jsonl),
               "--conf", CONF, "--threads", "1", "--no-progress"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "skipped 1" in err  # the .txt is not an image suffix: not a frame
    written = sorted(p.name for p in out.iterdir())
    sources = sorted(p for p in before if p.endswith(".png") or (p.endswith(".jpg") and p != "broken.jpg"))
    assert written == sources
    for name in written:
        assert cv2.imread(str(out / name)).shape == cv2.imread(str(image_folder / name)).shape
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["source"] for r in rows] == sources and [r["frame"] for r in rows] == [0, 1, 2]
    assert {p.name: p.read_bytes() for p in image_folder.iterdir()} == before


def test_glob_lists_every_unreadable_match(tmp_path, untrained_r18, image_folder, capsys):
    csv_path = tmp_path / "d.csv"
    rc = main(["detect", str(image_folder / "*"), "--model", str(untrained_r18), "--csv", str(csv_path),
               "--conf", CONF, "--classes", "car", "--threads", "1", "--no-progress"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "skipped 2" in err and "notes.txt" in err and "broken.jpg" in err
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["label"] for r in rows} == {"Car"}
    assert {r["source"] for r in rows} <= {p.name for p in image_folder.glob("0*.jpg")}


def test_refuses_to_overwrite_inputs(tmp_path, untrained_r18, image_folder, short_video, capsys):
    before = {p.name: p.read_bytes() for p in image_folder.iterdir()}
    assert main(["detect", str(image_folder), "--model", str(untrained_r18), "-o", str(image_folder)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in image_folder.iterdir()} == before
    video_bytes = short_video.read_bytes()
    assert main(["detect", str(short_video), "--model", str(untrained_r18), "-o", str(short_video)]) == 2
    assert main(["detect", str(short_video), "--model", str(untrained_r18), "--jsonl", str(short_video)]) == 2
    assert "overwritten" in capsys.readouterr().err
    assert short_video.read_bytes() == video_bytes


def test_missing_camera_is_one_clear_line(untrained_r18, capfd):
    assert main(["detect", "7", "--model", str(untrained_r18)]) == 2
    err = capfd.readouterr().err.strip()  # capfd: OpenCV's own backend warnings would show here too
    assert len(err.splitlines()) == 1 and "camera 7 cannot be opened" in err


def test_bad_arguments_are_one_clear_line(tmp_path, untrained_r18, capsys):
    assert main(["detect", str(tmp_path / "nope.mp4"), "--model", str(untrained_r18)]) == 2
    assert "source not found" in capsys.readouterr().err
    assert main(["detect", str(tmp_path / "*.png"), "--model", str(untrained_r18)]) == 2
    assert "no files match" in capsys.readouterr().err
    assert main(["detect", "0", "--model", str(untrained_r18), "--classes", "Car,Bus"]) == 2
    err = capsys.readouterr().err
    assert "unknown class 'Bus'" in err and "Car,Truck,Pedestrian" in err
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video")
    with pytest.raises(FastYoloError, match="cannot open"):
        open_source(str(fake))


def test_annotate_draws_class_coloured_box_and_label_without_touching_the_input():
    frame = np.zeros((300, 400, 3), np.uint8)
    dets = Detections(np.array([[100, 120, 220, 260]], np.float32), np.array([0.87], np.float32),
                      np.array([1], np.int32), np.array([7]))
    out = annotate(frame, dets)
    assert not frame.any(), "the input frame is not drawn on"
    colour = np.array(class_colour(1))
    assert (out[190, 100] == colour).all() and (out[190, 220] == colour).all()  # left and right edges
    assert (out[190, 160] == 0).all()  # inside stays clear
    label = out[:120, 95:300]  # the filled label above the box: mostly the class colour, with text
    filled = (label == colour).all(axis=2)
    assert filled.sum() > 500 and ((label != colour).any(axis=2) & (label.sum(axis=2) > 0)).any()
    # A box at the top edge gets its label inside the frame.
    top = annotate(frame, Detections(np.array([[10, 0, 100, 50]], np.float32), np.array([0.5], np.float32),
                                     np.array([0], np.int32)))
    assert (top[:20, 10:100] == np.array(class_colour(0))).all(axis=2).sum() > 200


def test_one_image_to_one_file(tmp_path, untrained_r18, kitti_images, capsys):
    out = tmp_path / "drawn.png"
    assert main(["detect", str(kitti_images[0]), "--model", str(untrained_r18), "-o", str(out), "--conf", CONF,
                 "--no-progress"]) == 0
    assert cv2.imread(str(out)).shape == cv2.imread(str(kitti_images[0])).shape
    assert capsys.readouterr().out == ""
    assert main(["detect", str(kitti_images[0]), "--model", str(untrained_r18), "--conf", CONF, "--no-progress"]) == 0
    row = json.loads(capsys.readouterr().out)  # no -o, --jsonl or --csv: JSON lines on stdout
    assert row["frame"] == 0 and row["source"] == kitti_images[0].name and row["detections"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_packaged_model_tracks_the_cars_of_unseen_frames(tmp_path, clip_path, precision):
    """No --model: the packaged trained model, on held-out frames of the real clip (428-435: a black
    car ahead in the next lane), finds and tracks a car in every frame, with one id throughout."""
    cap = cv2.VideoCapture(str(clip_path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 428)
    video = tmp_path / "cars.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (960, 540))
    for _ in range(8):
        writer.write(cap.read()[1])
    writer.release()
    cap.release()
    jsonl = tmp_path / "dets.jsonl"
    assert main(["detect", str(video), "--jsonl", str(jsonl), "--track", "--conf", "0.4", "--precision", precision,
                 "--threads", "1", "--no-progress"]) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 8
    cars = [[d for d in r["detections"] if d["label"] == "Car"] for r in rows]
    assert all(cars), cars  # a car in every frame
    ids = [{d["track_id"] for d in frame} for frame in cars[2:]]  # after the tracker's first frames
    assert set.intersection(*ids), ids  # one car keeps its id
