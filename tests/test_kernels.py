"""The numba @njit decode + NMS equals the numpy reference, element by element."""

from __future__ import annotations

import numpy as np
import pytest
from fastyolo.kernels import decode_nms_batch, decode_nms_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastyolo.layout import BOX_OFFSET, BOXES, CELL_SIZE, CLASS_OFFSET, CLASSES, CONF_OFFSET, GRID, MAX_BOXES


def random_grids(rng: np.random.Generator, n: int, *, quantize: int | None = None) -> np.ndarray:
    """Network-like outputs: softmax class scores, (0, 1) confidences and box values."""
    grids = rng.random((n, GRID, GRID, CELL_SIZE), dtype=np.float32)
    logits = rng.normal(size=(n, GRID, GRID, CLASSES)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    grids[..., CLASS_OFFSET : CLASS_OFFSET + CLASSES] = probs
    if quantize:  # few distinct values: many equal scores and coinciding boxes
        grids = np.round(grids * quantize) / quantize
    return grids.astype(np.float32)


def assert_same(grids, sizes, conf, iou, top_k):
    boxes, scores, classes, counts = decode_nms_batch(grids, sizes, conf, iou, top_k)
    for i, grid in enumerate(grids):
        ref_boxes, ref_scores, ref_classes = decode_nms_reference(grid, sizes[i][0], sizes[i][1], conf, iou, top_k)
        n = counts[i]
        assert n == len(ref_scores)
        np.testing.assert_array_equal(classes[i, :n], ref_classes)
        np.testing.assert_array_equal(scores[i, :n], ref_scores)
        np.testing.assert_array_equal(boxes[i, :n], ref_boxes)
        # padding past the count is untouched
        assert (classes[i, n:] == -1).all() and (scores[i, n:] == 0).all()
    return counts


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 3),
    conf=st.sampled_from([0.0, 0.05, 0.2, 0.5, 0.9, 1.0]) | st.floats(0, 1, width=32),
    iou=st.sampled_from([0.0, 0.3, 0.45, 0.5, 1.0]) | st.floats(0, 1),
    top_k=st.integers(1, MAX_BOXES + 10),
    quantize=st.sampled_from([None, None, 2, 4, 10]),
    width=st.integers(1, 4000),
    height=st.integers(1, 3000),
)
def test_njit_equals_reference(seed, batch, conf, iou, top_k, quantize, width, height):
    rng = np.random.default_rng(seed)
    grids = random_grids(rng, batch, quantize=quantize)
    sizes = np.array([[width, height]] * batch, dtype=np.float64)
    sizes[0] = (rng.integers(1, 2000), rng.integers(1, 2000))  # frames of different sizes in one batch
    assert_same(grids, sizes, conf, iou, top_k)


def test_all_boxes_kept_without_suppression():
    grids = random_grids(np.random.default_rng(1), 2)
    sizes = np.array([[1224, 370], [960, 540]], np.float64)
    counts = assert_same(grids, sizes, conf=0.0, iou=1.0, top_k=MAX_BOXES)
    assert counts.tolist() == [MAX_BOXES, MAX_BOXES]


def test_no_boxes_when_confidence_is_zero():
    grids = random_grids(np.random.default_rng(2), 2)
    grids[..., CONF_OFFSET : CONF_OFFSET + BOXES] = 0.0
    counts = assert_same(grids, np.array([[640, 480]] * 2, np.float64), conf=0.01, iou=0.5, top_k=100)
    assert counts.tolist() == [0, 0]


def test_equal_scores_keep_cell_order():
    """Identical cells: every score ties, and the earliest cell wins each NMS contest."""
    grid = np.zeros((1, GRID, GRID, CELL_SIZE), np.float32)
    grid[..., CLASS_OFFSET] = 1.0
    grid[..., CONF_OFFSET : CONF_OFFSET + BOXES] = 0.5
    grid[..., BOX_OFFSET:] = 0.5  # every box centred in its cell, half the image wide: all overlap
    sizes = np.array([[1000, 1000]], np.float64)
    boxes, scores, classes, counts = decode_nms_batch(grid, sizes, 0.1, 0.9, 50)
    assert_same(grid, sizes, 0.1, 0.9, 50)
    # the first kept box is cell (0, 0), slot 0: centre (0.5/11 of the frame), clipped at 0
    assert counts[0] >= 1
    np.testing.assert_allclose(boxes[0, 0], [0, 0, 0.5 / GRID * 1000 + 250, 0.5 / GRID * 1000 + 250], rtol=1e-6)


def test_zero_area_boxes_never_suppress_each_other():
    grid = random_grids(np.random.default_rng(3), 1)
    for b in range(BOXES):
        grid[..., BOX_OFFSET + 4 * b + 2] = 0.0  # w = 0
    sizes = np.array([[800, 600]], np.float64)
    counts = assert_same(grid, sizes, 0.0, 0.0, MAX_BOXES)
    assert counts[0] == MAX_BOXES  # IoU of zero-area boxes is 0, never > 0


def test_known_box_maps_to_frame_pixels():
    """One confident Truck in cell (row 3, col 5), centred, 20% x 10% of a 1224x370 frame."""
    grid = np.zeros((1, GRID, GRID, CELL_SIZE), np.float32)
    grid[..., CLASS_OFFSET] = 1.0
    grid[0, 3, 5, CLASS_OFFSET : CLASS_OFFSET + CLASSES] = (0.1, 0.8, 0.1)
    grid[0, 3, 5, CONF_OFFSET] = 0.9
    grid[0, 3, 5, BOX_OFFSET : BOX_OFFSET + 4] = (0.5, 0.5, 0.2, 0.1)
    boxes, scores, classes, counts = decode_nms_batch(grid, np.array([[1224, 370]]), 0.5, 0.5, 10)
    assert counts[0] == 1 and classes[0, 0] == 1
    assert scores[0, 0] == pytest.approx(0.72, rel=1e-6)
    cx, cy = 5.5 / GRID * 1224, 3.5 / GRID * 370
    np.testing.assert_allclose(boxes[0, 0], [cx - 122.4, cy - 18.5, cx + 122.4, cy + 18.5], rtol=1e-5)
