"""bench/recall_by_size.py on real KITTI frames with the packaged model: every labelled car lands in one height
bucket, and a car found at IoU 0.5 is found at 0.3 too."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from conftest import tiny_dataset

from fastyolo.datasets import load_dataset
from fastyolo.shipped import shipped_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from recall_by_size import CAR, HEIGHTS, recall_by_size  # noqa: E402


def test_recall_by_size_counts_every_labelled_car_once(kitti_dir, tmp_path):
    samples, _ = load_dataset(kitti_dir)
    frames = [s.image_path.name for s in samples[:6]]
    data = tiny_dataset(kitti_dir, tmp_path / "six", frames)
    r = recall_by_size(shipped_model("fp32"), data, [0.3, 0.5], conf=0.05)
    heights = np.concatenate([(s.boxes[:, 3] - s.boxes[:, 1])[s.class_ids == CAR] for s in samples[:6]])
    assert r["labels"] == np.bincount(np.searchsorted(HEIGHTS, heights, side="right") - 1,
                                      minlength=len(HEIGHTS)).tolist()
    assert sum(r["labels"]) > 0 and r["detections"][0] > 0
    loose, tight = np.array(r["found@0.3"]), np.array(r["found@0.5"])
    assert (tight <= loose).all() and (loose <= np.array(r["labels"])).all() and loose.sum() > 0
