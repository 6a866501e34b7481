"""`fastyolo eval` end to end on the real KITTI frames with an untrained exported ResNet-18."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import pytest

from fastyolo.cli import main
from fastyolo.layout import CLASS_NAMES

# kitti_tiny at --min-size 6: boxes under 6 px on a side once 1224x370..1242x375 frames are squashed to 224.
EVALUATED = {"Car": 179, "Truck": 28, "Pedestrian": 21}
IGNORED = {"Car": 30, "Truck": 7, "Pedestrian": 20}


def test_eval_onnx_on_kitti_writes_json_table_and_plot(untrained_r18: Path, kitti_dir: Path, tmp_path: Path, capsys):
    out, png = tmp_path / "eval.json", tmp_path / "pr.png"
    code = main(["eval", str(untrained_r18), "--data", str(kitti_dir), "--min-size", "6", "--json", str(out),
                 "--plot", str(png)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "75 frames, 285 boxes (Car 209, Truck 35, Pedestrian 41)" in printed
    assert all(name in printed for name in CLASS_NAMES) and "AP50:95" in printed
    result = json.loads(out.read_text())
    for key in ("map50", "map50_95", "per_class", "boxes_evaluated", "boxes_ignored", "detections", "frames", "min_size",
                "model", "backend", "conf", "dataset"):
        assert key in result
    assert result["frames"] == 75 and result["min_size"] == 6.0 and result["conf"] == 0.01
    assert result["boxes_evaluated"] == 228 and result["boxes_ignored"] == 57
    assert {n: r["boxes"] for n, r in result["per_class"].items()} == EVALUATED
    assert {n: r["ignored"] for n, r in result["per_class"].items()} == IGNORED
    # An untrained network scores near nothing, but it does output boxes at conf 0.01 (at most 100 per frame).
    assert 0 < result["detections"] <= 75 * 100
    assert result["detections"] == sum(r["detections"] for r in result["per_class"].values())
    assert 0.0 <= result["map50"] <= 1.0 and 0.0 <= result["map50_95"] <= 1.0
    for row in result["per_class"].values():
        assert 0.0 <= row["ap50"] <= 1.0 and 0.0 <= row["ap50_95"] <= 1.0
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 200 and image.std() > 0


@pytest.fixture()
def kitti_subset(kitti_dir: Path, tmp_path: Path) -> Path:
    """Six frames in KITTI layout (label_2/ + image_2/) to keep the checkpoint test short."""
    root = tmp_path / "subset"
    (root / "label_2").mkdir(parents=True)
    (root / "image_2").mkdir()
    for label in sorted((kitti_dir / "label_2").glob("*.txt"))[:6]:
        shutil.copy(label, root / "label_2" / label.name)
        shutil.copy(kitti_dir / "images" / f"{label.stem}.jpg", root / "image_2" / f"{label.stem}.jpg")
    return root


def test_eval_checkpoint_exports_the_same_network(untrained_r18: Path, kitti_subset: Path, tmp_path: Path):
    pytest.importorskip("torch", reason="a .pt checkpoint needs the [train] extra")
    from fastyolo.train.checkpoint import save_checkpoint

    from fastyolo.reference_model import untrained_network

    save_checkpoint(tmp_path / "untrained.pt", untrained_network("resnet18"))  # the cached ONNX's weights
    results = []
    for model in (tmp_path / "untrained.pt", untrained_r18):
        out = tmp_path / f"{model.suffix[1:]}.json"
        assert main(["eval", str(model), "--data", str(kitti_subset), "--json", str(out), "--backend", "onnxruntime"]) == 0
        results.append(json.loads(out.read_text()))
    from_pt, from_onnx = results
    assert from_pt["labels_format"].startswith("KITTI") and from_pt["frames"] == 6
    assert from_pt["boxes_ignored"] == 0 and from_pt["boxes_evaluated"] == from_onnx["boxes_evaluated"] > 0
    assert from_pt["detections"] == from_onnx["detections"]
    assert from_pt["map50"] == pytest.approx(from_onnx["map50"], abs=1e-6)
    assert from_pt["map50_95"] == pytest.approx(from_onnx["map50_95"], abs=1e-6)


def test_eval_errors_are_one_line(kitti_dir: Path, tmp_path: Path, capsys, monkeypatch):
    assert main(["eval", str(tmp_path / "none.onnx"), "--data", str(kitti_dir)]) == 2
    assert "model file not found" in capsys.readouterr().err
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    assert main(["eval", str(model), "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "dataset folder not found" in err and len(err.strip().splitlines()) == 1
    # A checkpoint without torch: one line that names the extra.
    checkpoint = tmp_path / "run.pt"
    checkpoint.write_bytes(b"x")
    for name in ("torch", "fastyolo.train.checkpoint", "fastyolo.train.export"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["eval", str(checkpoint), "--data", str(kitti_dir)]) == 2
    err = capsys.readouterr().err
    assert "needs torch" in err and "fastyolo[train]" in err and len(err.strip().splitlines()) == 1


def test_eval_without_faster_coco_eval_is_one_line(untrained_r18: Path, kitti_dir: Path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # not installed
    assert main(["eval", str(untrained_r18), "--data", str(kitti_dir)]) == 2
    err = capsys.readouterr().err
    assert "needs faster-coco-eval" in err and len(err.strip().splitlines()) == 1


def test_eval_side_never_imports_torch():
    import subprocess

    code = ("import sys, fastyolo.datasets, fastyolo.metrics, fastyolo.commands.eval, fastyolo.train.augment; "
            "from fastyolo.cli import build_parser; build_parser(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
