"""Nothing lost, nothing silently wrong: outputs never replace inputs, unwritable outputs and foreign
models fail in one line (exit 2) before any work, SIGTERM keeps the video, Detections indexing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fastyolo import Detection, Detections, Detector, ModelError
from fastyolo.cli import main
from fastyolo.errors import OutputError
from fastyolo.fileio import atomic_write, check_outputs, file_mode
from fastyolo.layout import INPUT_NAME, OUTPUT_NAME, describe


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fastyolo {command}: error:") and "\n" not in err, err
    return err


def fingerprint(path: Path) -> bytes:
    return path.read_bytes()


# ------------------------------------------------------------------------------ outputs vs inputs


def test_quantize_refuses_to_overwrite_its_model_even_through_a_link(untrained_r18, tmp_path, kitti_dir, capsys):
    model = tmp_path / "m.onnx"
    shutil.copy(untrained_r18, model)
    before = fingerprint(model)
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    for out in (model, link):
        assert main(["quantize", str(model), "--calib", str(kitti_dir / "images"), "-o", str(out)]) == 2
        assert "would be overwritten" in one_line_error(capsys, "quantize")
    assert fingerprint(model) == before


def test_export_refuses_to_overwrite_its_checkpoint(tmp_path, capsys):
    pytest.importorskip("torch")
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"a checkpoint")
    assert main(["export", str(ck), "-o", str(ck)]) == 2
    assert "would be overwritten" in one_line_error(capsys, "export")
    assert ck.read_bytes() == b"a checkpoint"


def test_eval_json_cannot_replace_the_labels(untrained_r18, kitti_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(kitti_dir, data)
    labels = data / "labels.csv"
    before = fingerprint(labels)
    assert main(["eval", str(untrained_r18), "--data", str(data), "--json", str(labels)]) == 2
    assert "would be overwritten" in one_line_error(capsys, "eval")
    assert main(["eval", str(untrained_r18), "--data", str(data), "--plot", str(data / "images" / "000000.jpg")]) == 2
    one_line_error(capsys, "eval")
    assert fingerprint(labels) == before


def test_bench_and_detect_cannot_replace_the_model(untrained_r18, kitti_images, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    shutil.copy(untrained_r18, model)
    before = fingerprint(model)
    assert main(["bench", "--model", str(model), "--json", str(model), "--frames", "1"]) == 2
    one_line_error(capsys, "bench")
    assert main(["detect", str(kitti_images[0]), "--model", str(model), "--csv", str(model), "--no-progress"]) == 2
    one_line_error(capsys, "detect")
    assert main(["detect", str(kitti_images[0]), "--model", str(model), "--jsonl", str(model), "--no-progress"]) == 2
    one_line_error(capsys, "detect")
    assert fingerprint(model) == before


def test_fp16_export_leaves_no_side_file_and_keeps_a_users_fp32(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "model.onnx"
    mine = tmp_path / "model.fp32.onnx"
    mine.write_bytes(b"the user's own file")
    assert main(["export", "--untrained", "--backbone", "resnet18", "--precision", "fp16", "-o", str(out)]) == 0
    assert mine.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.fp32.onnx", "model.onnx"]
    assert out.stat().st_mode & 0o777 == file_mode()  # the umask's mode, not mkstemp's 0600


# ------------------------------------------------------------------------------ unwritable outputs


UNWRITABLE = ["under_a_file", "proc"]


def unwritable(tmp_path: Path, kind: str, name: str) -> Path:
    if kind == "proc":
        return Path("/proc/fastyolo-test") / name
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    return blocker / name


@pytest.mark.parametrize("kind", UNWRITABLE)
def test_unwritable_outputs_fail_in_one_line_before_the_work(kind, untrained_r18, kitti_dir, kitti_images, tmp_path,
                                                             capsys):
    if kind == "proc" and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    m = str(untrained_r18)
    img = str(kitti_images[0])
    cases = [
        ("detect", ["detect", img, "--model", m, "--jsonl", str(unwritable(tmp_path, kind, "d.jsonl")), "--no-progress"]),
        ("detect", ["detect", img, "--model", m, "--csv", str(unwritable(tmp_path, kind, "d.csv")), "--no-progress"]),
        ("detect", ["detect", str(kitti_dir / "images"), "--model", m, "-o", str(unwritable(tmp_path, kind, "dir")),
                    "--no-progress", "--max-frames", "1"]),
        ("eval", ["eval", m, "--data", str(kitti_dir), "--json", str(unwritable(tmp_path, kind, "e.json"))]),
        ("eval", ["eval", m, "--data", str(kitti_dir), "--plot", str(unwritable(tmp_path, kind, "pr.png"))]),
        ("bench", ["bench", "--model", m, "--frames", "1", "--json", str(unwritable(tmp_path, kind, "b.json"))]),
        ("quantize", ["quantize", m, "--calib", str(kitti_dir / "images"), "-o", str(unwritable(tmp_path, kind, "q.onnx"))]),
    ]
    if kind == "under_a_file":
        cases.append(("export", ["export", "--untrained", "--backbone", "resnet18", "-o",
                                 str(unwritable(tmp_path, kind, "x.onnx"))]))
    for command, argv in cases:
        assert main(argv) == 2, argv
        one_line_error(capsys, command)
        out = capsys.readouterr().out
        assert "mAP" not in out and "FPS" not in out, f"{argv}: the work ran before the output was checked"


def test_check_outputs_and_atomic_write(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("input")
    with pytest.raises(OutputError, match="would be overwritten"):
        check_outputs([("--json", tmp_path / "." / "in.txt")], [src])
    with pytest.raises(OutputError, match="same file"):
        check_outputs([("--a", tmp_path / "o"), ("--b", tmp_path / "o")], [])
    target = tmp_path / "sub" / "out.json"
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half")
        raise RuntimeError("killed mid-write")
    assert not target.exists() and list((tmp_path / "sub").iterdir()) == []
    old = os.umask(0o027)
    try:
        with atomic_write(target) as f:
            f.write("whole")
        assert target.stat().st_mode & 0o777 == 0o640 and target.read_text() == "whole"
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------ foreign models


def _foreign(path: Path, in_dims: list, out_dims: list, metadata: dict | None) -> Path:
    out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, out_dims)
    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, in_dims)
    value = helper.make_tensor("v", TensorProto.FLOAT, [1, *out_dims[1:]], np.full(int(np.prod(out_dims[1:])), 0.9).tolist())
    node = helper.make_node("Constant", [], [OUTPUT_NAME], value=value)
    model = helper.make_model(helper.make_graph([node], "g", [inp], [out]))
    for key, val in (metadata or {}).items():
        model.metadata_props.add(key=key, value=val)
    onnx.save(model, str(path))
    return path


def test_a_foreign_model_with_our_names_is_refused(tmp_path, kitti_images, capsys):
    other_input = _foreign(tmp_path / "a.onnx", ["N", 3, 320, 320], ["N", 11, 11, 13], describe())
    no_metadata = _foreign(tmp_path / "b.onnx", ["N", 3, 224, 224], ["N", 11, 11, 13], None)
    for path, message in ((other_input, "inputs shape"), (no_metadata, "no fastyolo metadata")):
        for backend in ("openvino", "onnxruntime"):
            with pytest.raises(ModelError, match=message):
                Detector(path, backend=backend)
        assert main(["detect", str(kitti_images[0]), "--model", str(path), "--no-progress"]) == 2
        assert message in one_line_error(capsys, "detect")


# ------------------------------------------------------------------------------ Detections


def test_detections_index_gives_one_detection_like_iteration():
    dets = Detections(np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), np.array([0.9, 0.5], np.float32),
                      np.array([0, 2], np.int32), np.array([7, 9]))
    first = dets[0]
    assert isinstance(first, Detection) and first == list(dets)[0]
    assert first.label == "Car" and first.track_id == 7 and first.box == (1.0, 2.0, 3.0, 4.0)
    assert dets[-1].label == "Pedestrian" and dets[np.int64(1)] == dets[-1]
    with pytest.raises(IndexError):
        dets[2]
    one = dets[:1]
    assert isinstance(one, Detections) and len(one) == 1 and "1 Car" in repr(one) and list(one) == [first]
    assert len(dets[dets.scores > 0.6]) == 1
    with pytest.raises(ValueError, match="boxes"):
        Detections(np.zeros((2, 3)), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="class_ids"):
        Detections(np.zeros((1, 4)), np.zeros(1), np.array([5]))


def test_detections_round_trip_through_supervision():
    pytest.importorskip("supervision")
    dets = Detections(np.array([[1, 2, 3, 4]], np.float32), np.array([0.9], np.float32), np.array([1], np.int32),
                      np.array([3]))
    sv = dets.to_supervision()
    assert sv.xyxy.tolist() == [[1, 2, 3, 4]] and sv.data["class_name"].tolist() == ["Truck"]
    back = Detections.from_supervision(sv)
    assert list(back) == list(dets)


# ------------------------------------------------------------------------------ detect: SIGTERM, truncation, names


def test_sigterm_during_detect_leaves_a_playable_video(untrained_r18, clip_path, tmp_path):
    out = tmp_path / "out.mp4"
    cmd = [sys.executable, "-m", "fastyolo.cli", "detect", str(clip_path), "--model", str(untrained_r18), "-o", str(out),
           "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    # An .mp4 is written to a hidden temporary file beside it and renamed into place when finalised (fastyolo.writers)
    while time.monotonic() < deadline and proc.poll() is None and not any(
            p.stat().st_size > 200_000 for p in tmp_path.glob(".out.mp4.*")):
        time.sleep(0.2)
    assert proc.poll() is None, f"finished before it could be stopped: {proc.stderr.read()}"
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err
    assert "before the run stopped" in err and "terminated" in err
    cap = cv2.VideoCapture(str(out))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    assert decoded > 0 and f"({decoded} frames" in err  # every frame it reports is in the file
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # the temporary file was renamed, none is left


def test_truncated_video_says_so(untrained_r18, clip_path, tmp_path, capsys):
    full = tmp_path / "full.avi"
    cap = cv2.VideoCapture(str(clip_path))
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 180))
    for _ in range(20):
        writer.write(cv2.resize(cap.read()[1], (320, 180)))
    writer.release()
    cap.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert main(["detect", str(full), "--model", str(untrained_r18), "--no-progress", "--threads", "1"]) == 0
    assert "header announces" not in capsys.readouterr().err
    assert main(["detect", str(cut), "--model", str(untrained_r18), "--no-progress", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "ended after" in err and "of the 20 frames" in err


def test_jsonl_source_is_unique_across_folders(untrained_r18, kitti_images, tmp_path, capsys):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(kitti_images[0], tmp_path / sub / "x.jpg")
    out = tmp_path / "d.jsonl"
    assert main(["detect", str(tmp_path / "*" / "x.jpg"), "--model", str(untrained_r18), "--jsonl", str(out),
                 "--no-progress"]) == 0
    sources = [json.loads(line)["source"] for line in out.read_text().splitlines()]
    assert sources == ["a/x.jpg", "b/x.jpg"]


def test_track_reports_nothing_below_conf(untrained_r18, clip_path, tmp_path):
    out = tmp_path / "t.jsonl"
    assert main(["detect", str(clip_path), "--model", str(untrained_r18), "--track", "--conf", "0.15", "--jsonl",
                 str(out), "--max-frames", "6", "--no-progress", "--threads", "1"]) == 0
    scores = [d["score"] for line in out.read_text().splitlines() for d in json.loads(line)["detections"]]
    assert scores and min(scores) >= 0.15
