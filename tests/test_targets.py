"""Targets: cell of the centre, B objects per cell largest first, drops counted, network parametrisation."""

from __future__ import annotations

import numpy as np
import pytest

from fastyolo.layout import BOXES, CLASSES, GRID

pytest.importorskip("torch", reason="training needs the [train] extra (torch)")

from fastyolo.train.targets import build_targets  # noqa: E402

W, H = 1224.0, 370.0
CELL_W, CELL_H = W / GRID, H / GRID


def box_in_cell(row: int, col: int, fx: float, fy: float, bw: float, bh: float) -> list[float]:
    """A box of bw x bh pixels centred at fraction (fx, fy) of cell (row, col)."""
    cx, cy = (col + fx) * CELL_W, (row + fy) * CELL_H
    return [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]


def test_one_object_goes_to_its_centre_cell_in_network_parametrisation():
    t = build_targets(np.array([box_in_cell(3, 7, 0.25, 0.75, 100, 50)]), np.array([1]), W, H)
    assert t.dropped == 0
    assert t.mask.sum() == 1 and t.mask[3, 7, 0]
    np.testing.assert_allclose(t.boxes[3, 7, 0], [0.25, 0.75, 100 / W, 50 / H], rtol=1e-5)
    np.testing.assert_array_equal(t.classes[3, 7], np.eye(CLASSES)[1])
    assert t.classes.sum() == 1  # class target only in the object's cell
    assert t.boxes.shape == (GRID, GRID, BOXES, 4) and t.mask.shape == (GRID, GRID, BOXES)


def test_second_object_takes_second_slot_and_third_is_dropped():
    boxes = np.array([
        box_in_cell(5, 5, 0.5, 0.5, 40, 30),  # smallest: given first, placed last
        box_in_cell(5, 5, 0.2, 0.3, 200, 100),  # largest: slot 0
        box_in_cell(5, 5, 0.8, 0.6, 80, 60),  # slot 1
    ])
    t = build_targets(boxes, np.array([0, 0, 0]), W, H)
    assert BOXES == 2
    assert t.dropped == 1
    assert t.mask[5, 5].all() and t.mask.sum() == 2
    np.testing.assert_allclose(t.boxes[5, 5, 0, :2], [0.2, 0.3], atol=1e-5)
    np.testing.assert_allclose(t.boxes[5, 5, 1, :2], [0.8, 0.6], atol=1e-5)
    np.testing.assert_allclose(t.boxes[5, 5, 1, 2:], [80 / W, 60 / H], rtol=1e-5)


def test_object_of_another_class_in_an_occupied_cell_is_dropped():
    boxes = np.array([box_in_cell(2, 2, 0.3, 0.3, 200, 100), box_in_cell(2, 2, 0.7, 0.7, 50, 40)])
    t = build_targets(boxes, np.array([1, 0]), W, H)  # Truck (larger) then a Car
    assert t.dropped == 1 and t.mask.sum() == 1
    np.testing.assert_array_equal(t.classes[2, 2], np.eye(CLASSES)[1])


def test_objects_in_different_cells_and_edges():
    boxes = np.array([
        [0, 0, 10, 10],  # top-left cell
        [W - 10, H - 10, W, H],  # bottom-right cell
        [W - 2, 100, W, 120],  # centre near the right edge -> last column
    ])
    t = build_targets(boxes, np.array([0, 2, 1]), W, H)
    assert t.dropped == 0
    assert t.mask[0, 0, 0] and t.mask[GRID - 1, GRID - 1, 0]
    assert t.mask[:, GRID - 1].sum() == 2
    assert t.boxes[..., :2].min() >= 0.0 and t.boxes[..., :2].max() < 1.0


def test_decoding_targets_gives_back_the_boxes():
    rng = np.random.default_rng(0)
    x1 = rng.uniform(0, W - 60, 20)
    y1 = rng.uniform(0, H - 40, 20)
    boxes = np.stack([x1, y1, x1 + rng.uniform(5, 60, 20), y1 + rng.uniform(5, 40, 20)], 1)
    t = build_targets(boxes, np.zeros(20, np.int64), W, H)
    rows, cols, slots = np.nonzero(t.mask)
    b = t.boxes[rows, cols, slots].astype(np.float64)
    cx, cy = (cols + b[:, 0]) / GRID * W, (rows + b[:, 1]) / GRID * H
    decoded = np.stack([cx - b[:, 2] * W / 2, cy - b[:, 3] * H / 2, cx + b[:, 2] * W / 2, cy + b[:, 3] * H / 2], 1)
    assert len(decoded) + t.dropped == 20
    for box in decoded:  # every kept target decodes to one of the input boxes
        assert np.abs(boxes - box).max(axis=1).min() < 1e-3


def test_empty_and_bad_input():
    t = build_targets(np.zeros((0, 4)), np.zeros(0, np.int64), W, H)
    assert t.mask.sum() == 0 and t.dropped == 0 and t.classes.sum() == 0
    with pytest.raises(ValueError, match="class ids"):
        build_targets(np.array([[0, 0, 5, 5]]), np.array([CLASSES]), W, H)
    with pytest.raises(ValueError, match="boxes but"):
        build_targets(np.array([[0, 0, 5, 5]]), np.array([0, 1]), W, H)
