"""Two small bench tools on real frames: recall_by_size.py (with the packaged model) and wide_band.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_dataset

from fastyolo.datasets import load_dataset
from fastyolo.errors import FastYoloError
from fastyolo.shipped import shipped_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from recall_by_size import CAR, HEIGHTS, recall_by_size  # noqa: E402
from wide_band import KEEP, write_band  # noqa: E402


def test_recall_by_size_counts_every_labelled_car_once(kitti_dir, tmp_path):
    samples, _ = load_dataset(kitti_dir)
    frames = [s.image_path.name for s in samples[:6]]
    data = tiny_dataset(kitti_dir, tmp_path / "six", frames)
    r = recall_by_size(shipped_model("fp32"), data, [0.3, 0.5], conf=0.05)
    heights = np.concatenate([(s.boxes[:, 3] - s.boxes[:, 1])[s.class_ids == CAR] for s in samples[:6]])
    assert r["labels"] == np.bincount(np.searchsorted(HEIGHTS, heights, side="right") - 1,
                                      minlength=len(HEIGHTS)).tolist()
    assert sum(r["labels"]) > 0 and r["detections"] > 0
    loose, tight = np.array(r["found@0.3"]), np.array(r["found@0.5"])
    assert (tight <= loose).all() and (loose <= np.array(r["labels"])).all() and loose.sum() > 0


def test_wide_band_keeps_the_labels_inside_the_band_and_never_writes_the_source(pandaset_dir, tmp_path):
    source = pandaset_dir / "left_camera"
    top, bottom = 300, 400  # cuts through many of the camera's cars
    frames, kept, dropped = write_band(source, top, bottom, tmp_path / "band")
    original, _ = load_dataset(source)
    band, _ = load_dataset(tmp_path / "band")
    heights = np.concatenate([s.boxes[:, 3] - s.boxes[:, 1] for s in original])
    inside = np.concatenate([np.minimum(s.boxes[:, 3], bottom) - np.maximum(s.boxes[:, 1], top) for s in original])
    assert frames == len(original) == len(band) and kept + dropped == len(heights)
    assert kept == int((inside >= KEEP * heights).sum()) and 0 < dropped < len(heights)
    assert all(s.height == bottom - top and s.width == o.width for s, o in zip(band, original, strict=True))
    boxes = np.concatenate([s.boxes for s in band])
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= bottom - top).all()
    with pytest.raises(FastYoloError, match="never written"):
        write_band(source, top, bottom, source / "band")
    with pytest.raises(FastYoloError, match="not empty"):  # a second run into the same folder
        write_band(source, top, bottom, tmp_path / "band")
