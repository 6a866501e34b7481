"""Shared fixtures: the real data beside the repo (skipped with a reason where absent) and small models."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KITTI_DIR = SHARED_DATA / "kitti_tiny"
CLIP = SHARED_DATA / "video" / "highway_clip.mp4"
TEACHER = SHARED_DATA / "teacher" / "yolox_nano.onnx"
UDACITY = SHARED_DATA / "udacity_test_images"
PANDASET = SHARED_DATA / "pandaset_002"


def _shared(path: Path, what: str, present: bool) -> Path:
    """`path` of the real data, or the test skipped with the reason."""
    if not present:
        pytest.skip(f"{what} not found at {path} (../shared/data beside the repo)")
    return path


def tiny_dataset(kitti_dir: Path, out: Path, frames: tuple[str, ...] | list[str]) -> Path:
    """A crowdAI-layout copy of some kitti_tiny frames (labels.csv + images/)."""
    (out / "images").mkdir(parents=True)
    with open(kitti_dir / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [r for r in rows[1:] if r[4] in frames]
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(kept)
    for name in frames:
        shutil.copyfile(kitti_dir / "images" / name, out / "images" / name)
    return out


@pytest.fixture(scope="session")
def teacher_path() -> Path:
    """The COCO teacher detector (YOLOX-nano ONNX) that `fastyolo label` uses."""
    return _shared(TEACHER, "teacher model", TEACHER.is_file())


@pytest.fixture(scope="session")
def udacity_dir() -> Path:
    """6 real Udacity highway frames, 1280x720, no labels."""
    return _shared(UDACITY, "Udacity test images", UDACITY.is_dir())


@pytest.fixture(scope="session")
def kitti_dir() -> Path:
    """75 real KITTI frames with labels (labels.csv and label_2/)."""
    return _shared(KITTI_DIR, "real KITTI frames", (KITTI_DIR / "labels.csv").is_file())


@pytest.fixture(scope="session")
def pandaset_dir() -> Path:
    """240 real San Francisco frames, three cameras (back_camera/, left_camera/, right_camera/, labels.csv each)."""
    return _shared(PANDASET, "PandaSet frames", (PANDASET / "right_camera" / "labels.csv").is_file())


CACHED_FRAMES = 12  # kitti_tiny frames that the frame-cache and device-augmentation tests share


@pytest.fixture(scope="session")
def cached_frames(kitti_dir: Path) -> tuple[list, object]:
    """The first CACHED_FRAMES kitti_tiny samples and their in-memory frame cache (train/cache.py), built once."""
    from fastyolo.train.cache import build_cache

    from fastyolo.datasets import load_dataset

    samples = load_dataset(kitti_dir)[0][:CACHED_FRAMES]
    return samples, build_cache(samples, mode="memory")


@pytest.fixture(scope="session")
def kitti_images(kitti_dir: Path) -> list[Path]:
    return sorted((kitti_dir / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def clip_path() -> Path:
    """The real highway clip (960x540, 485 frames)."""
    return _shared(CLIP, "real highway clip", CLIP.is_file())


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session FASTYOLO_CACHE so tests never touch the user's cache."""
    return tmp_path_factory.mktemp("fastyolo-cache")


@pytest.fixture(scope="session")
def untrained_r18(model_cache: Path) -> Path:
    """An untrained ResNet-18 ONNX (fast to export and run); needs torch."""
    pytest.importorskip("torch", reason="exporting a model needs the [train] extra (torch)")
    import os

    os.environ["FASTYOLO_CACHE"] = str(model_cache)
    from fastyolo.reference_model import untrained_model

    return untrained_model("resnet18", quiet=True)


def fastyolo_layout_onnx(path: Path) -> None:
    """A model shaped like fastyolo's own network (images N x 3 x 224 x 224 -> grid N x 11 x 11 x 13),
    for teacher-layout refusals."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 224, 224])
    out = helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 11, 11, 13])
    value = helper.make_tensor("v", TensorProto.FLOAT, [1, 11, 11, 13], np.zeros(11 * 11 * 13).tolist())
    node = helper.make_node("Constant", [], ["grid"], value=value)
    onnx.save(helper.make_model(helper.make_graph([node], "g", [inp], [out])), str(path))


# Batches through 0 and 2 DataLoader worker processes, compared in a fresh interpreter: the test process has run
# OpenVINO, where training reads its batches in-process instead (engine.safe_workers).
_WORKER_BATCHES = """
import json, sys
import torch
from fastyolo.datasets import load_dataset
from fastyolo.train.cache import build_cache
from fastyolo.train.data import EpochBatches, YoloDataset
from fastyolo.train.engine import _loader
kitti, frames, on_device = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
samples, _ = load_dataset(kitti)
samples = samples[:frames]
dataset = YoloDataset(samples, augment=True, seed=5, aspect=1.8, cache=build_cache(samples, mode="memory"),
                      augment_on_device=on_device)
batches, workers_used = {}, {}
for workers in (0, 2):
    plan = EpochBatches(len(dataset), 3, seed=5)
    plan.plan([(1, True), (2, True)])
    loader = _loader(dataset, 3, workers, torch.device("cpu"), plan)
    batches[workers], workers_used[workers] = list(loader), loader.num_workers
def same(xs, ys):
    return len(xs) == len(ys) and all(torch.equal(a, b) for x, y in zip(xs, ys) for a, b in zip(x, y, strict=True))
by_epoch = []  # the two epochs iterated one at a time, as separate streams
for epoch in (1, 2):
    one = EpochBatches(len(dataset), 3, seed=5)
    one.plan([(epoch, True)])
    by_epoch += list(_loader(dataset, 3, 0, torch.device("cpu"), one))
print(json.dumps({"batches": len(batches[0]), "workers_used": workers_used[2], "equal": same(batches[0], batches[2]),
                  "equal_by_epoch": same(batches[0], by_epoch)}))
"""


def worker_batches_equal(kitti_dir: Path, frames: int, on_device: bool) -> dict:
    """Run _WORKER_BATCHES (epochs 1 and 2 in one stream): {"batches", "workers_used" (the 2-worker loader's),
    "equal" (0 and 2 workers), "equal_by_epoch" (0 workers, against each epoch streamed alone)}."""
    done = subprocess.run([sys.executable, "-c", _WORKER_BATCHES, str(kitti_dir), str(frames), "1" if on_device else "0"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
