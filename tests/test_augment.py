"""Augmentation: boxes stay on the pixels they label through every transform (hypothesis), on synthetic and real frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fastyolo.train.augment import MIN_VISIBLE, AugmentParams, apply, augment, draw_params
from hypothesis import given, settings
from hypothesis import strategies as st

from fastyolo.datasets import load_dataset

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _mask_box(image: np.ndarray) -> tuple[np.ndarray | None, int]:
    """Bounding box (x1, y1, x2, y2, pixel edges) of the pixels at least half as bright as the brightest, and their count."""
    gray = image.max(axis=2).astype(np.float32)
    if gray.max() == 0:
        return None, 0
    ys, xs = np.nonzero(gray >= 0.5 * gray.max())
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32), len(xs)


def _check_boxes_follow_masks(image: np.ndarray, boxes: np.ndarray, params: AugmentParams) -> None:
    """Warp a white mask of each box with the same params: kept boxes must match the warped mask's extent."""
    h, w = image.shape[:2]
    ids = np.arange(len(boxes))
    _, out_boxes, out_ids = apply(image, boxes, ids, params)
    assert out_boxes.shape == (len(out_ids), 4) and out_boxes.dtype == np.float32
    assert (out_boxes[:, :2] >= 0).all() and (out_boxes[:, 2] <= w).all() and (out_boxes[:, 3] <= h).all()
    scale = params.matrix[0, 0]
    for i, box in enumerate(boxes):
        mask = np.zeros_like(image)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        mask[y1:y2, x1:x2] = 255
        warped_mask, _, _ = apply(mask, box[None], np.zeros(1, np.int64), params)
        extent, pixels = _mask_box(warped_mask)
        if i in out_ids:
            assert extent is not None
            np.testing.assert_allclose(out_boxes[list(out_ids).index(i)], extent, atol=0.75)
        else:  # dropped: less than MIN_VISIBLE of the warped box is inside the frame (1-pixel border slack)
            area = (x2 - x1 + 2) * (y2 - y1 + 2) * scale**2
            assert pixels <= MIN_VISIBLE * area + 2 * (x2 - x1 + y2 - y1 + 4) * scale


@st.composite
def _boxes(draw, width: int = 200, height: int = 120) -> np.ndarray:
    n = draw(st.integers(1, 6))
    out = []
    for _ in range(n):
        x1 = draw(st.integers(0, width - 8))
        y1 = draw(st.integers(0, height - 8))
        out.append([x1, y1, draw(st.integers(x1 + 8, width)), draw(st.integers(y1 + 8, height))])
    return np.array(out, np.float32)


@settings(max_examples=60, deadline=None)
@given(boxes=_boxes(), seed=st.integers(0, 2**32 - 1))
def test_boxes_stay_on_their_pixels_synthetic(boxes: np.ndarray, seed: int):
    image = np.zeros((120, 200, 3), np.uint8)
    params = draw_params(np.random.default_rng(seed), 200, 120)
    _check_boxes_follow_masks(image, boxes, params)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shift=st.sampled_from([-0.2, 0.2]), scale=st.sampled_from([0.8, 1.2]))
def test_extreme_translate_and_scale_drop_boxes_that_leave(seed: int, shift: float, scale: float):
    """At the corners of the range many boxes leave the frame: the drop rule is exercised, not only the keep."""
    rng = np.random.default_rng(seed)
    boxes = np.array([[0, 0, 40, 30], [160, 90, 200, 120], [90, 50, 110, 70], [0, 100, 30, 120]], np.float32)
    m = np.array([[scale, 0, (1 - scale) * 100 + shift * 200], [0, scale, (1 - scale) * 60 + shift * 120]])
    params = AugmentParams(m, float(rng.uniform(0.67, 1.5)), float(rng.uniform(0.67, 1.5)), bool(rng.random() < 0.5))
    _check_boxes_follow_masks(np.zeros((120, 200, 3), np.uint8), boxes, params)


@pytest.fixture(scope="module")
def kitti_sample(kitti_dir: Path):
    samples, _ = load_dataset(kitti_dir)
    sample = max(samples, key=lambda s: len(s.boxes))  # the busiest frame
    return sample.load_image(), sample.boxes


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_boxes_stay_on_their_pixels_real_kitti_frame(kitti_sample, seed: int):
    image, boxes = kitti_sample
    params = draw_params(np.random.default_rng(seed), image.shape[1], image.shape[0])
    _check_boxes_follow_masks(image, boxes, params)


def test_augment_draws_within_the_documented_ranges(kitti_sample):
    image, boxes = kitti_sample
    h, w = image.shape[:2]
    scales, shifts, flips = [], [], 0
    for seed in range(200):
        p = draw_params(np.random.default_rng(seed), w, h)
        s = p.matrix[0, 0]
        assert p.matrix[1, 1] == s and p.matrix[0, 1] == p.matrix[1, 0] == 0
        scales.append(s)
        # the frame centre moves by the translation only
        shifts.append(((p.matrix[0, 2] + (s - 1) * w / 2) / w, (p.matrix[1, 2] + (s - 1) * h / 2) / h))
        assert 1 / 1.5 <= p.saturation <= 1.5 and 1 / 1.5 <= p.value <= 1.5
        flips += p.flip
    assert 0.8 <= min(scales) < 0.85 and 1.15 < max(scales) <= 1.2
    shifts = np.abs(np.array(shifts))
    assert shifts.max() <= 0.2 and shifts.max() > 0.18
    assert 70 < flips < 130
    out, out_boxes, out_ids = augment(image, boxes, np.arange(len(boxes)), np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.uint8 and len(out_boxes) == len(out_ids)


def test_flip_twice_is_identity(kitti_sample):
    image, boxes = kitti_sample
    params = AugmentParams(IDENTITY, 1.0, 1.0, True)
    ids = np.arange(len(boxes))
    once, once_boxes, once_ids = apply(image, boxes, ids, params)
    assert not np.array_equal(once, image)
    np.testing.assert_array_equal(once[:, ::-1], image)
    twice, twice_boxes, twice_ids = apply(once, once_boxes, once_ids, params)
    np.testing.assert_array_equal(twice, image)
    np.testing.assert_allclose(twice_boxes, boxes, atol=1e-3)
    np.testing.assert_array_equal(twice_ids, ids)


@settings(max_examples=25, deadline=None)
@given(saturation=st.floats(1 / 1.5, 1.5), value=st.floats(1 / 1.5, 1.5), boxes=_boxes())
def test_hsv_jitter_leaves_geometry_untouched(saturation: float, value: float, boxes: np.ndarray):
    # Saturated colour boxes on black: the jitter changes their colour, never which pixels they cover.
    image = np.zeros((120, 200, 3), np.uint8)
    colours = [(40, 80, 220), (200, 60, 30), (60, 200, 90), (180, 180, 40), (90, 30, 160), (30, 160, 200)]
    for (x1, y1, x2, y2), colour in zip(boxes.astype(int), colours, strict=False):
        image[y1:y2, x1:x2] = colour
    ids = np.arange(len(boxes))
    out, out_boxes, out_ids = apply(image, boxes, ids, AugmentParams(IDENTITY, saturation, value, False))
    np.testing.assert_array_equal(out_boxes, boxes)
    np.testing.assert_array_equal(out_ids, ids)
    np.testing.assert_array_equal(out.max(axis=2) > 0, image.max(axis=2) > 0)
    v_in = image.max(axis=2).astype(np.float64)
    v_out = out.max(axis=2).astype(np.float64)
    lit = v_in > 0
    np.testing.assert_allclose(v_out[lit], np.minimum(v_in[lit] * value, 255), atol=1.01)


def test_hsv_jitter_on_a_real_frame_scales_brightness(kitti_sample):
    image, _ = kitti_sample
    out, _, _ = apply(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), AugmentParams(IDENTITY, 1.0, 0.7, False))
    v_in = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[..., 2].astype(np.float64)
    v_out = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)[..., 2].astype(np.float64)
    assert np.abs(v_out - np.round(v_in * 0.7)).max() <= 2


def test_bad_arguments_raise(kitti_sample):
    image, boxes = kitti_sample
    with pytest.raises(ValueError, match="translate"):
        augment(image, boxes, np.arange(len(boxes)), np.random.default_rng(0), scale=(1.2, 0.8))


def test_integer_shift_moves_pixels_and_boxes_exactly(kitti_sample):
    image, boxes = kitti_sample
    m = np.array([[1.0, 0.0, 7.0], [0.0, 1.0, -5.0]])
    out, out_boxes, _ = apply(image, boxes, np.arange(len(boxes)), AugmentParams(m, 1.0, 1.0, False), min_visible=0.0)
    np.testing.assert_array_equal(out[:-5, 7:], image[5:, :-7])
    assert (out[-5:] == 0).all() and (out[:, :7] == 0).all()
    expected = (boxes + [7, -5, 7, -5]).clip(0, [image.shape[1], image.shape[0]] * 2)
    np.testing.assert_allclose(out_boxes, expected[(expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])])
