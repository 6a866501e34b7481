"""The labelling teachers (fastyolo.teacher): YOLOX and PicoDet decode, letterbox, NMS, class mapping, layout
detection; their views (fastyolo.teacher_views) and box fusion (fastyolo.fusion); on real KITTI frames."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fastyolo_layout_onnx

from fastyolo.detections import Detections
from fastyolo.errors import FastYoloError, ModelError
from fastyolo.fusion import pooled_nms, weighted_boxes_fusion
from fastyolo.layout import CLASS_NAMES
from fastyolo.teacher import (
    PAD_VALUE,
    Teacher,
    anchor_points,
    decode,
    decode_picodet,
    letterbox,
    map_coco,
    nms,
    unletterbox,
)
from fastyolo.teacher_views import Ensemble, View, plan_views, tile_starts, view_detections

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # as conftest.py
TEACHER = SHARED_DATA / "teacher" / "yolox_nano.onnx"
PICODET = SHARED_DATA / "teacher" / "picodet_s_416_coco.onnx"
SIZE = (416, 416)
FRAMES = (16, 36, 38)  # kitti_tiny frames with the most small distant cars
CAR, TRUCK, PED = (CLASS_NAMES.index(n) for n in ("Car", "Truck", "Pedestrian"))


@pytest.fixture(scope="module")
def teacher(teacher_path: Path) -> Teacher:
    return Teacher(teacher_path, backend="onnxruntime")  # the demo's runtime: its numbers exactly


@pytest.fixture(scope="module")
def picodet_path() -> Path:
    if not PICODET.is_file():
        pytest.skip(f"PicoDet teacher not found at {PICODET} (../shared/data beside the repo)")
    return PICODET


@pytest.fixture(scope="module")
def picodet(picodet_path: Path) -> Teacher:
    return Teacher(picodet_path, backend="onnxruntime")


def _row(stride: int, gx: int, gy: int) -> int:
    """Output row of grid point (gx, gy) at a stride: grids 52, 26, 13 one after the other, row-major."""
    offset = {8: 0, 16: 52 * 52, 32: 52 * 52 + 26 * 26}[stride]
    return offset + gy * (416 // stride) + gx


def test_anchor_points_follow_yolox_order():
    grid, stride = anchor_points(SIZE)
    assert grid.shape == (3549, 2) and stride.shape == (3549, 1)
    assert grid[_row(8, 3, 2)].tolist() == [3, 2] and stride[_row(8, 3, 2), 0] == 8
    assert grid[_row(16, 5, 7)].tolist() == [5, 7] and stride[_row(16, 5, 7), 0] == 16
    assert grid[-1].tolist() == [12, 12] and stride[-1, 0] == 32
    grid, _ = anchor_points((320, 416))  # not square: W / stride columns per row
    assert len(grid) == 40 * 52 + 20 * 26 + 10 * 13 and grid[52].tolist() == [0, 1]


def test_decode_hand_built_output_at_each_stride():
    raw = np.zeros((3549, 85), np.float32)
    # (row, cx offset, cy offset, w/stride, h/stride, objectness, COCO class, class score) -> expected box
    cases = [
        (_row(8, 3, 2), 0.5, 0.25, 4.0, 2.0, 0.8, 2, 0.5, (12.0, 10.0, 44.0, 26.0)),
        (_row(16, 5, 7), 0.0, 0.5, 1.0, 3.0, 0.9, 7, 1.0, (72.0, 96.0, 88.0, 144.0)),
        (_row(32, 12, 0), -0.25, 1.0, 2.0, 0.5, 1.0, 0, 0.6, (344.0, 24.0, 408.0, 40.0)),
    ]
    for row, dx, dy, w, h, obj, cls, score, _ in cases:
        raw[row, :4] = (dx, dy, math.log(w), math.log(h))
        raw[row, 4], raw[row, 5 + cls] = obj, score
    boxes, scores = decode(raw, SIZE)
    assert boxes.shape == (3549, 4) and scores.shape == (3549, 80)
    for row, _, _, _, _, obj, cls, score, expected in cases:
        np.testing.assert_allclose(boxes[row], expected, atol=1e-4)
        assert scores[row, cls] == pytest.approx(obj * score)
    keep, kept, coco = nms(boxes, scores, conf=0.3, iou=0.45)
    assert sorted(coco.tolist()) == [0, 2, 7] and sorted(keep.tolist()) == sorted(c[0] for c in cases)
    assert kept.tolist() == sorted(kept.tolist(), reverse=True)  # best first
    with pytest.raises(ModelError, match="rows"):
        decode(raw[:100], SIZE)


def test_letterbox_top_left_bgr_pad_114_and_round_trip():
    image = np.zeros((100, 200, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # B, G, R
    blob, r = letterbox(image, SIZE)
    assert blob.shape == (1, 3, 416, 416) and blob.dtype == np.float32
    assert r == pytest.approx(416 / 200)
    new_h = int(100 * r)  # 208
    assert blob[0, :, :new_h, :].reshape(3, -1).min(axis=1).tolist() == [10, 20, 30]  # BGR kept, 0-255
    assert (blob[0, :, new_h:, :] == PAD_VALUE).all()
    frame_box = np.array([[20.0, 10.0, 120.5, 90.0]], np.float32)
    back = unletterbox(frame_box * r, r, (200, 100))
    np.testing.assert_allclose(back, frame_box, atol=1e-4)
    # Boxes reaching past the frame (into the padding or beyond) are clipped to it.
    clipped = unletterbox(np.array([[-10.0, 150.0, 500.0, 300.0]], np.float32), r, (200, 100))
    np.testing.assert_allclose(clipped, [[0.0, 150.0 / r, 200.0, 100.0]], atol=1e-4)


def _scores(*pairs: tuple[int, float]) -> np.ndarray:
    s = np.zeros((len(pairs), 80), np.float32)
    for i, (cls, score) in enumerate(pairs):
        s[i, cls] = score
    return s


def test_nms_iou_threshold_uses_yolox_inclusive_pixels():
    # (0,0,9,9) vs (0,0,9,y): YOLOX's IoU is (y + 1) / 10, suppressed only above 0.45.
    for y, kept in ((3.5, 2), (3.6, 1)):
        boxes = np.array([[0, 0, 9, 9], [0, 0, 9, y]], np.float32)
        keep, _, _ = nms(boxes, _scores((2, 0.9), (2, 0.8)), conf=0.1, iou=0.45)
        assert len(keep) == kept


def test_nms_class_agnostic_vs_class_aware_and_threshold():
    boxes = np.array([[0, 0, 100, 50], [2, 0, 100, 52], [200, 0, 260, 40], [300, 0, 340, 40]], np.float32)
    scores = _scores((2, 0.9), (7, 0.7), (0, 0.6), (0, 0.3))
    keep, kept, coco = nms(boxes, scores, conf=0.3, iou=0.45)  # score must be > conf: the 0.3 box goes
    assert keep.tolist() == [0, 2] and coco.tolist() == [2, 0]
    np.testing.assert_allclose(kept, [0.9, 0.6])
    keep, _, coco = nms(boxes, scores, conf=0.3, iou=0.45, class_agnostic=False)  # car and truck both stay
    assert keep.tolist() == [0, 1, 2] and coco.tolist() == [2, 7, 0]
    # Class-aware: an anchor scoring above conf in two classes gives a box for each.
    two = _scores((2, 0.8))
    two[0, 7] = 0.5
    _, _, coco = nms(boxes[:1], two, conf=0.3, iou=0.45, class_agnostic=False)
    assert coco.tolist() == [2, 7]
    keep, kept, coco = nms(boxes, scores, conf=0.95, iou=0.45)
    assert keep.shape == kept.shape == coco.shape == (0,)


def _reference_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """YOLOX demo_utils.nms, written out as a loop, as the reference for the OpenCV version."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        order = order[np.where(inter / (areas[i] + areas[order[1:]] - inter) <= thr)[0] + 1]
    return keep


def test_nms_matches_yolox_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (300, 2))], axis=1).astype(np.float32)
    scores = np.zeros((300, 80), np.float32)
    scores[np.arange(300), rng.choice([0, 2, 5, 7], 300)] = rng.uniform(0, 1, 300)
    keep, kept, coco = nms(boxes, scores, conf=0.2, iou=0.45)
    valid = np.flatnonzero(scores.max(1) > 0.2)
    expected = valid[_reference_nms(boxes[valid], scores.max(1)[valid], 0.45)]
    assert sorted(keep.tolist()) == sorted(expected.tolist())
    for cls in (0, 2, 5, 7):  # class-aware = the reference NMS class by class
        k, _, c = nms(boxes, scores, conf=0.2, iou=0.45, class_agnostic=False)
        mine = sorted(k[c == cls].tolist())
        v = np.flatnonzero(scores[:, cls] > 0.2)
        assert mine == sorted(v[_reference_nms(boxes[v], scores[v, cls], 0.45)].tolist())


def test_coco_to_fastyolo_classes():
    assert map_coco(np.array([0, 2, 5, 7, 1, 3, 6, 79])).tolist() == [PED, CAR, TRUCK, TRUCK, -1, -1, -1, -1]


def test_teacher_refuses_missing_and_foreign_models(tmp_path: Path):
    with pytest.raises(ModelError, match="teacher model not found"):
        Teacher(tmp_path / "nope.onnx")
    foreign = tmp_path / "fastyolo.onnx"
    fastyolo_layout_onnx(foreign)
    with pytest.raises(ModelError, match=r"fastyolo.onnx is not a COCO teacher in a layout fastyolo reads: expected "
                                         r"YOLOX .* or PicoDet .*; it has inputs \[\['N', 3, 224, 224\]\]"):
        Teacher(foreign)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file" * 10)
    with pytest.raises(ModelError, match="cannot load the teacher"):
        Teacher(junk)


def _outputs_onnx(path: Path, shapes: list[list[int]]) -> None:
    """A model with one image input and constant outputs of these shapes (layout detection only looks at shapes)."""
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 416, 416])
    outs, nodes = [], []
    for i, shape in enumerate(shapes):
        outs.append(helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, shape))
        value = helper.make_tensor(f"v{i}", TensorProto.FLOAT, shape, np.zeros(int(np.prod(shape))).tolist())
        nodes.append(helper.make_node("Constant", [], [f"o{i}"], value=value))
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [inp], outs)), str(path))


def test_layout_read_from_the_onnx(tmp_path: Path, teacher: Teacher, picodet: Teacher):
    assert (teacher.layout, teacher.input_name, teacher.input_size) == ("yolox", "images", (416, 416))
    assert (picodet.layout, picodet.input_name, picodet.input_size) == ("picodet", "image", (416, 416))
    pico = [[1, n, 80] for n in (2704, 676, 169, 49)] + [[1, n, 32] for n in (2704, 676, 169, 49)]
    _outputs_onnx(tmp_path / "pico.onnx", pico)
    assert Teacher(tmp_path / "pico.onnx", backend="onnxruntime").layout == "picodet"  # shapes decide, not names
    for name, shapes, pattern in (
        ("seven.onnx", pico[:7], "not a COCO teacher in a layout"),  # seven outputs
        ("classes.onnx", [[1, n, 20] for n in (2704, 676, 169, 49)] + pico[4:], "not a COCO teacher"),  # 20 classes
        ("anchors.onnx", [[1, 2704, 80], [1, 676, 80], [1, 169, 80], [1, 36, 80]] + pico[4:], "stride 64 .* 49"),
        ("yolox.onnx", [[1, 3000, 85]], "3000 rows where strides"),
    ):
        _outputs_onnx(tmp_path / name, shapes)
        with pytest.raises(ModelError, match=pattern):
            Teacher(tmp_path / name, backend="onnxruntime")


@functools.cache
def _session(path: Path):
    """The model on a plain onnxruntime session, as the published demos run it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _yolox_demo(teacher: Teacher, image: np.ndarray) -> np.ndarray:
    """YOLOX's published ONNX demo pipeline written out independently: preproc, demo_postprocess, class-agnostic
    multiclass_nms; rows x1, y1, x2, y2, score, COCO class."""
    padded = np.ones((416, 416, 3), np.uint8) * 114
    r = min(416 / image.shape[0], 416 / image.shape[1])
    resized = cv2.resize(image, (int(image.shape[1] * r), int(image.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
    padded[: int(image.shape[0] * r), : int(image.shape[1] * r)] = resized
    blob = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)[None]
    out = _session(teacher.path).run(None, {"images": blob})[0][0].copy()
    grids, strides = [], []
    for s in (8, 16, 32):
        xv, yv = np.meshgrid(np.arange(416 // s), np.arange(416 // s))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((len(grids[-1]), 1), s))
    g, st = np.concatenate(grids), np.concatenate(strides)
    out[:, :2] = (out[:, :2] + g) * st
    out[:, 2:4] = np.exp(out[:, 2:4]) * st
    xyxy = np.stack([out[:, 0] - out[:, 2] / 2, out[:, 1] - out[:, 3] / 2,
                     out[:, 0] + out[:, 2] / 2, out[:, 1] + out[:, 3] / 2], 1) / r
    scores = out[:, 4:5] * out[:, 5:]
    cls = scores.argmax(1)
    best = scores[np.arange(len(cls)), cls]
    valid = np.flatnonzero(best > teacher.conf)
    keep = valid[_reference_nms(xyxy[valid], best[valid], 0.45)]
    return np.concatenate([xyxy[keep], best[keep, None], cls[keep, None]], 1)


def test_teacher_matches_yolox_demo_on_real_frames(teacher: Teacher, kitti_images: list[Path]):
    frames = [cv2.imread(str(p)) for p in kitti_images[:4]]
    udacity = SHARED_DATA / "udacity_test_images" / "test1.jpg"
    if udacity.is_file():
        frames.append(cv2.imread(str(udacity)))
    found = 0
    for image in frames:
        boxes, scores, coco = teacher.detect_coco(image)
        ref = _yolox_demo(teacher, image)
        ref = ref[np.argsort(-ref[:, 4], kind="stable")]
        h, w = image.shape[:2]
        np.testing.assert_allclose(boxes, ref[:, :4].clip(0, [w, h, w, h]), atol=1e-2)
        np.testing.assert_allclose(scores, ref[:, 4], atol=1e-6)
        assert coco.tolist() == ref[:, 5].astype(int).tolist()
        found += len(boxes)
    assert found > 0


def _kitti_objects(path: Path) -> list[tuple[str, np.ndarray]]:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(r[0], np.array([float(v) for v in r[4:8]])) for r in rows]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_teacher_finds_kitti_cars(teacher: Teacher, kitti_dir: Path, kitti_images: list[Path]):
    """Every third kitti_tiny frame (25): cars and vans >= 25 px tall found at IoU 0.5, and Car boxes that
    land on a labelled vehicle or DontCare region. Measured: recall 31/49 = 0.63, precision 36/44 = 0.82;
    bench/teacher_kitti.py gives the full figures (0.63 recall, 0.77 strict precision on all 75 frames)."""
    objects = found = correct = dets = 0
    for path in kitti_images[::3]:
        labels = _kitti_objects(kitti_dir / "label_2" / f"{path.stem}.txt")
        cars = [b for kind, b in labels if kind in ("Car", "Van") and b[3] - b[1] >= 25]
        anything = [b for kind, b in labels if kind in ("Car", "Van", "Truck", "DontCare")]
        d = teacher.detect(cv2.imread(str(path)))
        car_boxes = d.boxes[d.class_ids == CAR]
        objects += len(cars)
        found += sum(any(_iou(t, b) >= 0.5 for b in car_boxes) for t in cars)
        dets += len(car_boxes)
        correct += sum(any(_iou(b, t) >= 0.5 for t in anything) for b in car_boxes)
    assert objects == 49
    assert found / objects >= 0.5, f"recall {found}/{objects}"
    assert correct / dets >= 0.7, f"precision {correct}/{dets}"


def _picodet_row(stride: int, gx: int, gy: int) -> int:
    offset = {8: 0, 16: 52 * 52, 32: 52 * 52 + 26 * 26, 64: 52 * 52 + 26 * 26 + 13 * 13}[stride]
    return offset + gy * math.ceil(416 / stride) + gx


def test_picodet_decode_hand_built_outputs():
    n = [52 * 52, 26 * 26, 13 * 13, 7 * 7]
    outputs = [np.zeros((k, 80), np.float32) for k in n] + [np.full((k, 32), -30.0, np.float32) for k in n]
    # (stride, grid x, grid y, bins of left/top/right/bottom, COCO class, score) -> expected box
    cases = [(8, 3, 2, (1, 2, 3, 0), 2, 0.9), (64, 6, 6, (7, 7, 0, 1), 0, 0.6)]
    for stride, gx, gy, bins, cls, score in cases:
        level = {8: 0, 16: 1, 32: 2, 64: 3}[stride]
        row = _picodet_row(stride, gx, gy) - sum(n[:level])
        outputs[level][row, cls] = score
        for side, b in enumerate(bins):
            outputs[4 + level][row, side * 8 + b] = 30.0  # a one-hot distribution: distance b * stride
    boxes, scores = decode_picodet([o[None] for o in outputs], SIZE)
    assert boxes.shape == (sum(n), 4) and scores.shape == (sum(n), 80)
    for stride, gx, gy, (left, top, right, bottom), cls, score in cases:
        row = _picodet_row(stride, gx, gy)
        cx, cy = gx * stride + (stride - 1) / 2, gy * stride + (stride - 1) / 2
        expected = (cx - left * stride, cy - top * stride, cx + right * stride, cy + bottom * stride)
        np.testing.assert_allclose(boxes[row], expected, atol=1e-3)
        assert scores[row, cls] == pytest.approx(score)
    # A flat distribution is the mean bin, 3.5 strides from the centre on every side.
    np.testing.assert_allclose(boxes[0], [3.5 - 28, 3.5 - 28, 3.5 + 28, 3.5 + 28], atol=1e-3)
    with pytest.raises(ModelError, match="anchor rows"):
        decode_picodet([o[None, :10] for o in outputs], SIZE)


def _picodet_demo(path: Path, image: np.ndarray, threshold: float) -> np.ndarray:
    """hpc203/picodet-onnxruntime's main.py pipeline written out independently, with PaddleDetection's resize
    (no aspect kept, as the teacher README measured): rows x1, y1, x2, y2, score, COCO class (before clipping)."""
    mean = np.array([103.53, 116.28, 123.675], np.float32)
    std = np.array([57.375, 57.12, 58.395], np.float32)
    img = cv2.resize(image, (416, 416), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    blob = ((img / 255.0 - mean / 255.0) / (std / 255.0)).transpose(2, 0, 1)[None]
    outs = _session(path).run(None, {"image": np.ascontiguousarray(blob, np.float32)})
    all_boxes, all_scores = [], []
    for i, stride in enumerate((8, 16, 32, 64)):
        side = math.ceil(416 / stride)
        xv, yv = np.meshgrid(np.arange(side) * stride, np.arange(side) * stride)
        anchors = np.stack((xv.flatten() + 0.5 * (stride - 1), yv.flatten() + 0.5 * (stride - 1)), axis=-1)
        dist = np.exp(outs[4 + i][0].reshape(-1, 8))
        dist = (dist / dist.sum(axis=1, keepdims=True)) @ np.arange(8)
        d = dist.reshape(-1, 4) * stride
        all_boxes.append(np.stack([anchors[:, 0] - d[:, 0], anchors[:, 1] - d[:, 1],
                                   anchors[:, 0] + d[:, 2], anchors[:, 1] + d[:, 3]], axis=-1))
        all_scores.append(outs[i][0])
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    cls = scores.argmax(1)
    best = scores[np.arange(len(cls)), cls]
    valid = np.flatnonzero(best > threshold)
    keep = valid[_reference_nms(boxes[valid], best[valid], 0.45)]
    scale = np.array([image.shape[1] / 416, image.shape[0] / 416] * 2)
    return np.concatenate([boxes[keep] * scale, best[keep, None], cls[keep, None]], 1)


def test_picodet_matches_its_demo_on_real_frames(picodet: Teacher, kitti_images: list[Path]):
    found = 0
    for path in kitti_images[:3]:
        image = cv2.imread(str(path))
        boxes, scores, coco = picodet.detect_coco(image)
        ref = _picodet_demo(picodet.path, image, picodet.conf)
        ref = ref[np.argsort(-ref[:, 4], kind="stable")]
        h, w = image.shape[:2]
        np.testing.assert_allclose(boxes, ref[:, :4].clip(0, [w, h, w, h]), atol=1e-2)
        np.testing.assert_allclose(scores, ref[:, 4], atol=1e-6)
        assert coco.tolist() == ref[:, 5].astype(int).tolist()
        found += int(np.isin(coco, [0, 2, 5, 7]).sum())
    assert found >= 5  # measured: 14 people and vehicles in these three frames


def test_openvino_runs_the_same_teachers(teacher: Teacher, picodet: Teacher, kitti_images: list[Path]):
    image = cv2.imread(str(kitti_images[10]))
    for reference in (teacher, picodet):
        fast = Teacher(reference.path)  # OpenVINO, the default
        a, b = reference.candidates(image), fast.candidates(image)
        np.testing.assert_allclose(a[0], b[0], atol=0.05)  # pixels
        np.testing.assert_allclose(a[1], b[1], atol=2e-3)  # scores


def test_tile_layout_and_views():
    assert tile_starts(1242, 416, 0.25) == [0, 275, 551, 826]  # 4 tiles, neighbours share >= 104 px
    assert tile_starts(1242, 416, 0.0) == [0, 413, 826]
    assert tile_starts(400, 416, 0.25) == [0]
    views = plan_views(1242, 375, (416, 416), 0.25, "all", (1.0,))  # native-scale tiles
    assert [v.name for v in views[:4]] == ["full", "full flipped", "tile 0,0 416x375", "tile 0,0 416x375 flipped"]
    assert len(views) == 10 and all(v.y2 - v.y1 == 375 and v.x2 - v.x1 == 416 for v in views[2:])
    assert len(plan_views(960, 540, (416, 416), 0.25, "full", (1.0,))) == 2 + 3 * 2  # 3 columns x 2 rows, unflipped
    assert [v.name for v in plan_views(416, 300, (416, 416), 0.25, "none", (1.0,))] == ["full"]  # no tile of a small frame
    # A box in a flipped tile comes back to the frame where the object is.
    image = np.zeros((375, 1242, 3), np.uint8)
    image[100:150, 600:700] = 255
    tile = View(551, 0, 967, 375, flip=True, tile=True)
    crop = tile.crop(image)
    ys, xs = np.nonzero(crop[..., 0])
    back = tile.to_frame(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32))
    np.testing.assert_allclose(back, [[600, 100, 700, 150]])
    assert tile.inner(1242, 375) == (554.0, 0.0, 964.0, 375.0)  # 3 px in from the edges inside the frame


def test_zoomed_tiles_are_smaller_crops_enlarged_into_the_teacher():
    native, zoomed = (plan_views(1242, 375, (416, 416), 0.25, "none", zooms) for zooms in ((1.0,), (1.0, 1.5)))
    assert [v.name for v in native] == ["full"] + [f"tile {x},0 416x375" for x in (0, 275, 551, 826)]  # zoom 1: native
    extra = zoomed[len(native):]
    assert zoomed[:len(native)] == native and all(v.zoom == 1.5 and v.tile for v in extra)
    assert {(v.x2 - v.x1, v.y2 - v.y1) for v in extra} == {(277, 277)}  # 416 / 1.5, now smaller than the frame height
    xs, ys = sorted({v.x1 for v in extra}), sorted({v.y1 for v in extra})
    assert xs[0] == 0 and xs[-1] == 1242 - 277 and ys == [0, 375 - 277]  # the whole frame covered
    assert all(b - a <= 277 * 0.75 + 1 for a, b in zip(xs, xs[1:], strict=False))  # neighbours share >= a quarter
    assert extra[0].name == "tile 0,0 277x277 zoom 1.5"
    # A box the teacher finds in a zoomed crop maps back through the crop, like a native tile's.
    image = np.zeros((375, 1242, 3), np.uint8)
    image[120:130, 650:670] = 255
    tile = next(v for v in extra if v.x1 <= 650 and v.x2 >= 670 and v.y1 == 0)
    ys_, xs_ = np.nonzero(tile.crop(image)[..., 0])
    np.testing.assert_allclose(tile.to_frame(np.array([[xs_.min(), ys_.min(), xs_.max() + 1, ys_.max() + 1]])),
                               [[650, 120, 670, 130]])
    # A frame no larger than a zoomed tile has none of that zoom.
    assert [v.name for v in plan_views(270, 270, (416, 416), 0.25, "none", (1.0, 1.5))] == ["full"]
    for bad in ((), (0.5,), (1.5, 1.5), (5.0,)):
        with pytest.raises(FastYoloError, match="tile zooms"):
            plan_views(1242, 375, (416, 416), 0.25, "none", bad)


class _FixedTeacher:
    """A teacher double that finds the same boxes (crop pixels) in whatever it is shown."""

    input_size = (416, 416)

    def __init__(self, boxes):
        self.boxes = np.asarray(boxes, np.float32)

    def detect(self, image, conf=None):
        n = len(self.boxes)
        return Detections(self.boxes, np.full(n, 0.9, np.float32), np.zeros(n, np.int32))


def test_tile_boxes_cut_by_an_inner_edge_are_dropped():
    image = np.zeros((375, 1242, 3), np.uint8)
    fake = _FixedTeacher([[0, 50, 40, 90], [100, 50, 150, 90], [380, 50, 416, 90]])  # left edge, inside, right edge
    inside = view_detections(fake, image, View(275, 0, 691, 375, tile=True), 0.1)
    np.testing.assert_allclose(inside.boxes, [[375, 50, 425, 90]])
    first = view_detections(fake, image, View(0, 0, 416, 375, tile=True), 0.1)  # the frame's own edge stays
    np.testing.assert_allclose(first.boxes, [[0, 50, 40, 90], [100, 50, 150, 90]])
    assert len(view_detections(fake, image, View(0, 0, 1242, 375), 0.1)) == 3  # the full frame keeps all


def _dets(rows) -> Detections:
    rows = np.asarray(rows, np.float32).reshape(-1, 6)
    return Detections(rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int32))


def test_weighted_boxes_fusion_hand_computed():
    a = _dets([[0, 0, 100, 100, 0.9, CAR], [300, 0, 340, 40, 0.6, PED]])
    b = _dets([[10, 10, 110, 110, 0.3, CAR]])
    fused = weighted_boxes_fusion([a, b], iou_thr=0.55, agnostic=False)
    # The two cars (IoU 0.68) are one box: corners weighted 0.9 : 0.3, score (0.9 + 0.3) / 2 models.
    np.testing.assert_allclose(fused.boxes, [[2.5, 2.5, 102.5, 102.5], [300, 0, 340, 40]], atol=1e-4)
    np.testing.assert_allclose(fused.scores, [0.6, 0.3], atol=1e-6)  # the pedestrian only one model saw: 0.6 / 2
    assert fused.class_ids.tolist() == [CAR, PED]
    weighted = weighted_boxes_fusion([a, b], weights=[1.0, 3.0], iou_thr=0.55)
    np.testing.assert_allclose(weighted.scores, [(0.9 + 0.9) / 4, 0.6 / 4], atol=1e-6)
    np.testing.assert_allclose(weighted.boxes[0], [5, 5, 105, 105], atol=1e-4)  # 0.9 : 0.9 after the weights
    # Below the IoU threshold: two boxes.
    assert len(weighted_boxes_fusion([a, b], iou_thr=0.7)) == 3
    # A van: one teacher says car, the other truck. Per class: two boxes; agnostic: one, the stronger class's.
    c = _dets([[10, 10, 110, 110, 0.5, TRUCK]])
    assert len(weighted_boxes_fusion([a[:1], c], agnostic=False)) == 2
    one = weighted_boxes_fusion([a[:1], c], agnostic=True)
    assert one.class_ids.tolist() == [CAR] and one.scores.tolist() == pytest.approx([0.7])
    assert len(weighted_boxes_fusion([Detections.empty(), Detections.empty()])) == 0


def test_fusion_counts_only_the_views_that_saw_a_box():
    far_car = [700, 150, 720, 165, 0.8, CAR]  # a small car only the tile found
    full, tile = _dets([]), _dets([far_car])
    plain = weighted_boxes_fusion([full, tile], visible=None)
    aware = weighted_boxes_fusion([full, tile], visible=[None, (554.0, 0.0, 964.0, 375.0)])
    assert plain.scores.tolist() == pytest.approx([0.4])
    assert aware.scores.tolist() == pytest.approx([0.4])  # the full frame saw it too: it votes
    tile_a, tile_b = _dets([far_car]), _dets([])
    aware = weighted_boxes_fusion([full, tile_a, tile_b], visible=[None, (554, 0, 964, 375), (0, 0, 413, 375)])
    assert aware.scores.tolist() == pytest.approx([0.4])  # 0.8 over the two views that held it, not three
    assert weighted_boxes_fusion([full, tile_a, tile_b]).scores.tolist() == pytest.approx([0.8 / 3])


def test_pooled_nms_keeps_the_best_box():
    a = _dets([[0, 0, 100, 100, 0.9, CAR]])
    b = _dets([[10, 10, 110, 110, 0.95, TRUCK], [300, 0, 340, 40, 0.6, PED]])
    kept = pooled_nms([a, b], iou_thr=0.5)
    assert kept.class_ids.tolist() == [TRUCK, PED] and kept.scores.tolist() == pytest.approx([0.95, 0.6])
    assert len(pooled_nms([a, b], iou_thr=0.5, agnostic=False)) == 3


def test_tiles_find_more_kitti_cars(teacher_path: Path, picodet_path: Path, kitti_dir: Path,
                                    kitti_images: list[Path]):
    """Three kitti_tiny frames with small distant cars: PicoDet on the full frame and its tiles (zoom 1.5), fused,
    finds more labelled cars (IoU >= 0.5) than YOLOX-nano on the full frame (the old labeller), at a precision no
    worse (boxes on a labelled vehicle or DontCare region). Measured (at --conf 0.37): 17 of 22 cars against 9,
    precision 21 / 26 against 9 / 17 (native-scale tiles: 16 of 22, 19 / 26)."""
    plain = Ensemble([Teacher(teacher_path, conf=0.05)], tiles=False, flip="none")
    tiled = Ensemble([Teacher(picodet_path, conf=0.05)], flip="none")
    counts = {"plain": [0, 0, 0], "tiled": [0, 0, 0]}  # cars found, boxes on a vehicle or DontCare, boxes
    cars = 0
    for path in (kitti_images[i] for i in FRAMES):
        labels = _kitti_objects(kitti_dir / "label_2" / f"{path.stem}.txt")
        truth = [b for kind, b in labels if kind == "Car"]
        anything = [b for kind, b in labels if kind in ("Car", "Van", "Truck", "DontCare")]
        cars += len(truth)
        image = cv2.imread(str(path))
        for name, ensemble in (("plain", plain), ("tiled", tiled)):
            d = ensemble.detect(image)
            boxes = d.boxes[d.class_ids == CAR]
            counts[name][0] += sum(any(_iou(t, b) >= 0.5 for b in boxes) for t in truth)
            counts[name][1] += sum(any(_iou(b, t) >= 0.5 for t in anything) for b in boxes)
            counts[name][2] += len(boxes)
    assert counts["tiled"][0] >= counts["plain"][0] + 3, (counts, cars)
    precision = {k: v[1] / v[2] for k, v in counts.items()}
    assert precision["tiled"] >= precision["plain"] - 0.05, counts
