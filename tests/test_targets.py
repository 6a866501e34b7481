"""Targets: cell of the centre, B objects per cell largest first (or rarest class first), drops counted,
network parametrisation."""

from __future__ import annotations

import numpy as np
import pytest

from fastyolo.datasets import load_dataset
from fastyolo.layout import BOXES, CLASS_NAMES, CLASSES, GRID

pytest.importorskip("torch", reason="training needs the [train] extra (torch)")

from fastyolo.train.targets import RARE_FIRST, build_targets  # noqa: E402

PEDESTRIAN, TRUCK, CAR = (CLASS_NAMES.index(n) for n in ("Pedestrian", "Truck", "Car"))

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


def test_rare_order_keeps_the_pedestrian_beside_a_bigger_car():
    """One cell: a big Car, a Pedestrian, a small Truck. "area" keeps the Car (the others are of another class);
    "rare" keeps the Pedestrian (the rarest) and drops the Car and the Truck."""
    boxes = np.array([box_in_cell(4, 6, 0.3, 0.4, 220, 120), box_in_cell(4, 6, 0.6, 0.5, 20, 60),
                      box_in_cell(4, 6, 0.8, 0.2, 60, 40)])
    ids = np.array([CAR, PEDESTRIAN, TRUCK])
    area = build_targets(boxes, ids, W, H)
    assert area.dropped == 2 and area.mask.sum() == 1
    np.testing.assert_array_equal(area.classes[4, 6], np.eye(CLASSES)[CAR])
    np.testing.assert_allclose(area.boxes[4, 6, 0, :2], [0.3, 0.4], atol=1e-5)
    rare = build_targets(boxes, ids, W, H, "rare")
    assert rare.dropped == 2 and rare.mask.sum() == 1
    np.testing.assert_array_equal(rare.classes[4, 6], np.eye(CLASSES)[PEDESTRIAN])
    np.testing.assert_allclose(rare.boxes[4, 6, 0], [0.6, 0.5, 20 / W, 60 / H], rtol=1e-5)
    # Two of the same rare class share the cell's slots, the larger first.
    two = build_targets(np.vstack([boxes, [box_in_cell(4, 6, 0.1, 0.9, 30, 80)]]), np.append(ids, PEDESTRIAN),
                        W, H, "rare")
    assert two.mask[4, 6].all() and two.dropped == 2
    np.testing.assert_allclose(two.boxes[4, 6, :, :2], [[0.1, 0.9], [0.6, 0.5]], atol=1e-5)
    assert RARE_FIRST[0] == "Pedestrian" and set(RARE_FIRST) == set(CLASS_NAMES)
    with pytest.raises(ValueError, match="order is one of"):
        build_targets(boxes, ids, W, H, "size")


def test_rare_order_on_real_city_labels(pandaset_dir):
    """PandaSet's real labels: under "rare" each grid cell keeps min(BOXES, its objects of its rarest class) and
    that class; under "area" the largest object's class. Pedestrians beside cars survive only under "rare"."""
    kept = {"area": np.zeros(CLASSES, int), "rare": np.zeros(CLASSES, int)}
    for camera in ("back_camera", "right_camera"):
        for s in load_dataset(pandaset_dir / camera)[0]:
            cx = np.clip(((s.boxes[:, 0] + s.boxes[:, 2]) / 2 / s.width * GRID).astype(int), 0, GRID - 1)
            cy = np.clip(((s.boxes[:, 1] + s.boxes[:, 3]) / 2 / s.height * GRID).astype(int), 0, GRID - 1)
            area = (s.boxes[:, 2] - s.boxes[:, 0]) * (s.boxes[:, 3] - s.boxes[:, 1])
            for order in ("area", "rare"):
                t = build_targets(s.boxes, s.class_ids, s.width, s.height, order)
                expected = np.zeros((GRID, GRID, CLASSES))
                for row, col in set(zip(cy.tolist(), cx.tolist(), strict=True)):
                    here = np.flatnonzero((cy == row) & (cx == col))
                    if order == "area":
                        first = s.class_ids[here[np.argmax(area[here])]]
                    else:
                        first = min(s.class_ids[here], key=lambda c: RARE_FIRST.index(CLASS_NAMES[c]))
                    expected[row, col, first] = min(BOXES, int((s.class_ids[here] == first).sum()))
                np.testing.assert_array_equal(t.classes * t.mask.sum(-1, keepdims=True), expected)
                assert t.dropped == len(s.boxes) - expected.sum()
                kept[order] += expected.sum((0, 1)).astype(int)
    assert kept["rare"][PEDESTRIAN] > 4 * max(kept["area"][PEDESTRIAN], 1)  # measured 54 against 5
    assert kept["rare"][TRUCK] > kept["area"][TRUCK]


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


def test_perfect_grids_through_the_kernel_and_tile_merge_give_back_real_labels(kitti_dir):
    """bench/grid_ceiling.py's oracle on real KITTI labels: a frame's training targets, as a network output, come
    back through the decode + NMS kernel as exactly its labelled boxes and classes (frames where the layout drops
    none and NMS has no overlapping pair to remove); tiled (auto: two tiles and the whole frame), the tile merge
    makes no false box from the parts that tile edges cut, and finds at least what the whole frame finds."""
    import sys
    from pathlib import Path

    from fastyolo.kernels import decode_nms_batch

    from fastyolo import cfg
    from fastyolo.metrics import box_iou

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from grid_ceiling import ceiling, oracle_grid

    samples, _ = load_dataset(kitti_dir)
    checked = 0
    for s in samples:
        boxes, ids = np.asarray(s.boxes, np.float64).reshape(-1, 4), np.asarray(s.class_ids, np.int64)
        grid, dropped = oracle_grid(boxes, ids, np.array([0, 0, s.width, s.height]))
        same_class = ids[:, None] == ids[None, :]
        overlapping = (box_iou(boxes, boxes) > cfg.IOU) & same_class & ~np.eye(len(ids), dtype=bool)
        if dropped or overlapping.any() or not len(ids):
            continue
        out, _, classes, counts = decode_nms_batch(grid[None], np.array([[s.width, s.height]], np.float64),
                                                   cfg.MAP_CONF, cfg.IOU, cfg.TOP_K)
        found, found_ids = out[0, : counts[0]].astype(np.float64), classes[0, : counts[0]]
        assert len(found) == len(ids), s.image_path
        match = np.abs(found[:, None, :] - boxes[None, :, :]).max(-1).argmin(1)
        np.testing.assert_allclose(found, boxes[match], atol=0.05)
        assert sorted(match.tolist()) == list(range(len(ids))) and (found_ids == ids[match]).all()
        checked += 1
    assert checked >= 30, checked  # of 75 frames
    whole = ceiling(samples, cfg.parse_tiles("off"), 6.0)["per_class"]["Car"]
    tiled = ceiling(samples, cfg.parse_tiles("auto"), 6.0)["per_class"]["Car"]
    assert tiled["precision"] == 1.0 and whole["precision"] == 1.0
    assert tiled["recall"] >= whole["recall"] >= 0.9
