"""Tiled inference (fastyolo/tiles.py): the spec, the windows, the merge against a numpy reference, and the
tiled Detector on real KITTI (1242x375) and PandaSet (960x540) frames: one network call, the same boxes as
running the windows by hand, the threads promise, prepare, track, and the CLI's --tiles."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastyolo import cfg, tiles
from fastyolo.cli import main
from fastyolo.detections import Detections
from fastyolo.detector import Detector
from fastyolo.errors import FrameError, UsageError
from fastyolo.preprocess import prepare
from fastyolo.shipped import shipped_model

PANDASET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pandaset_002" / "back_camera"


@pytest.fixture(scope="module")
def kitti_frames(kitti_images) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in kitti_images[:4]]


@pytest.fixture(scope="module")
def wide_frame() -> np.ndarray:
    """A real 960x540 PandaSet frame (16:9: not wide enough for auto)."""
    path = PANDASET / "images" / "00.jpg"
    if not path.is_file():
        pytest.skip(f"PandaSet frames not found at {path} (../shared/data beside the repo)")
    return cv2.imread(str(path))


@pytest.fixture(scope="module")
def plain() -> Detector:
    return Detector(conf=0.05, threads=2)  # the packaged model: it finds cars on KITTI, so merges have work to do


@pytest.fixture(scope="module")
def tiled() -> Detector:
    return Detector(conf=0.05, threads=2, tiles="auto")


def _same(a: Detections, b: Detections) -> None:
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)


# --- the option -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "canonical"), [("off", "off"), ("none", "off"), ("1x1", "off"), ("auto", "auto"),
                                                 ("3x1", "3x1"), (" 2X2+Full ", "2x2+full")])
def test_tile_specs(text, canonical):
    assert str(cfg.parse_tiles(text)) == canonical


@pytest.mark.parametrize(("text", "message"), [("3", "COLUMNSxROWS"), ("0x2", "1 to 16 tiles"), ("5x5", "1 to 16"),
                                               ("1x1+full", "write off"), ("auto+", "COLUMNSxROWS")])
def test_bad_tile_specs_are_one_line(text, message):
    with pytest.raises(UsageError, match=message):
        cfg.parse_tiles(text)
    with pytest.raises(UsageError, match="^tiles "):
        Detector(tiles=text)


def test_cli_refuses_bad_tiles_in_detect_eval_and_bench(kitti_dir, kitti_images, capsys):
    for argv in (["detect", str(kitti_images[0]), "--no-progress"], ["eval", str(shipped_model("fp32")), "--data",
                 str(kitti_dir)], ["bench", "--frames", "1"]):
        assert main([*argv, "--tiles", "9x9"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--tiles '9x9': 1 to 16 tiles" in err, err
    assert main(["bench", "--frames", "1", "--tiles", "auto", "--mode", "throughput"]) == 2
    assert "times latency mode" in capsys.readouterr().err


# --- the windows ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["2x1", "3x1+full", "2x2", "4x3+full"])
@pytest.mark.parametrize(("width", "height"), [(1242, 375), (960, 540), (101, 37)])
def test_windows_cover_the_frame_with_the_overlap(spec, width, height):
    s = cfg.parse_tiles(spec)
    windows = tiles.plan(s, width, height, 0.2)
    assert len(windows) == s.columns * s.rows + s.full
    if s.full:
        assert windows[-1].tolist() == [0, 0, width, height]
    grid = windows[: s.columns * s.rows]
    assert (grid[:, 0] >= 0).all() and (grid[:, 2] <= width).all() and (grid[:, 3] <= height).all()
    assert len({(w[2] - w[0], w[3] - w[1]) for w in grid}) == 1  # one tile size
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in grid:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    if s.columns > 1:  # neighbours share about 20% of a tile's width
        shared = (grid[0, 2] - grid[1, 0]) / (grid[0, 2] - grid[0, 0])
        assert 0.15 < shared < 0.25


def test_auto_tiles_only_wide_frames():
    auto = cfg.parse_tiles("auto")
    assert tiles.plan(auto, 960, 540).tolist() == [[0, 0, 960, 540]]  # 16:9: whole
    kitti = tiles.plan(auto, 1242, 375)  # 3.3:1: two 16:9-ish tiles and the whole frame
    assert kitti.tolist() == [[0, 0, 690, 375], [552, 0, 1242, 375], [0, 0, 1242, 375]]
    assert len(tiles.plan(auto, 3840, 540)) == 5 + 1  # 7.1:1: five 1.7:1 tiles and the whole frame


# --- the merge against a numpy reference ------------------------------------------------------------------------


def _span_iou(a0, a1, b0, b1) -> float:
    inter, union = min(a1, b1) - max(a0, b0), max(a1, b1) - min(a0, b0)
    return inter / union if inter > 0 and union > 0 else 0.0


def merge_reference(boxes, scores, classes, cut, iou, match, top_k):
    """The merge rule of fastyolo.tiles, written out in numpy: best first; a kept box absorbs every later one of its
    class with IoU > iou, and where either is cut also one it intersects whose span across the cut agrees (1-D IoU
    >= match); two cut boxes become their union, a cut kept box takes the box of a whole one it absorbs."""
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    absorbed = np.zeros(len(scores), bool)
    kept, out = [], []
    for i in order:
        if len(kept) >= top_k:
            break
        if absorbed[i]:
            continue
        box, own = boxes[i].copy(), int(cut[i])
        for j in order[rank[i] + 1:]:
            if absorbed[j] or classes[j] != classes[i]:
                continue
            lo, hi = np.maximum(box[:2], boxes[j, :2]), np.minimum(box[2:], boxes[j, 2:])
            inter = np.prod(hi - lo) if (hi > lo).all() else 0.0
            a, b = np.prod(box[2:] - box[:2]), np.prod(boxes[j, 2:] - boxes[j, :2])
            over = inter / (a + b - inter) if a + b - inter > 0 else 0.0
            either = own | int(cut[j])
            if not either:
                absorbed[j] = over > iou
                continue
            ys = _span_iou(box[1], box[3], boxes[j, 1], boxes[j, 3])
            xs = _span_iou(box[0], box[2], boxes[j, 0], boxes[j, 2])
            if over > iou or (inter > 0 and (not either & tiles.CUT_X or ys >= match)
                              and (not either & tiles.CUT_Y or xs >= match)):
                absorbed[j] = True
                if own and cut[j]:
                    box = np.concatenate([np.minimum(box[:2], boxes[j, :2]), np.maximum(box[2:], boxes[j, 2:])])
                    own &= int(cut[j])
                elif own:
                    box, own = boxes[j].copy(), 0
        kept.append(i)
        out.append(box)
    return np.array(kept, np.int64), np.array(out, np.float64).reshape(-1, 4)


def test_merge_kernel_equals_the_numpy_reference():
    rng = np.random.default_rng(3)
    for trial in range(40):
        n = int(rng.integers(0, 40))
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(0, 80, (n, 2)) * (rng.random((n, 1)) > 0.05)  # some zero-area boxes
        boxes = np.concatenate([xy, xy + wh], axis=1)
        scores = rng.choice(np.linspace(0.05, 1, 12), n).astype(np.float32)  # ties
        classes = rng.integers(0, 3, n).astype(np.int32)
        cut = rng.choice(np.array([0, 0, 1, 2, 3], np.int8), n)
        iou, match, top_k = float(rng.choice([0.3, 0.45, 0.7])), float(rng.choice([0.5, 0.8])), int(rng.integers(1, 50))
        kept, merged = tiles.merge_kernel(boxes, scores, classes, cut, iou, match, top_k)
        ref_kept, ref_merged = merge_reference(boxes, scores, classes, cut, iou, match, top_k)
        np.testing.assert_array_equal(kept, ref_kept, err_msg=f"trial {trial}")
        np.testing.assert_array_equal(merged, ref_merged, err_msg=f"trial {trial}")


def test_a_car_cut_by_a_tile_edge_becomes_one_box_and_whole_duplicates_stay_tight():
    windows = tiles.plan(cfg.parse_tiles("2x1"), 1242, 375)  # tiles 0..690 and 552..1242
    # A car 500..800 wide: the left tile sees 500..690 (cut at its right edge), the right tile 552..800 (cut at
    # its left edge, 0..248 in its pixels): one box, their union, at the better score.
    left = Detections([[500, 150, 690, 220]], [0.6], [0])
    right = Detections([[0, 152, 248, 221]], [0.5], [0])
    one = tiles.merge_detections([left, right], windows, 1242, 375, iou=0.45, top_k=100)
    assert len(one) == 1 and one.boxes[0].tolist() == [500, 150, 800, 221] and one.scores[0] == np.float32(0.6)
    # The left part again, and the right tile seeing a smaller car whole (600..800): the whole box replaces the part.
    whole = Detections([[48, 152, 248, 221]], [0.5], [0])
    part = tiles.merge_detections([Detections([[600, 150, 690, 220]], [0.6], [0]), whole], windows, 1242, 375,
                                  iou=0.45, top_k=100)
    assert len(part) == 1 and part.boxes[0].tolist() == [600, 152, 800, 221] and part.scores[0] == np.float32(0.6)
    # A small far car inside the box of a near car cut by the edge stays (SAHI's IOS would merge it away).
    far = Detections([[68, 180, 98, 200]], [0.3], [0])  # 620..650 in the frame, in the right tile
    both = tiles.merge_detections([Detections([[500, 100, 690, 260]], [0.6], [0]), far], windows, 1242, 375,
                                  iou=0.45, top_k=100)
    assert len(both) == 2
    # Seen whole by both tiles (inside the overlap): plain NMS keeps the best box as it is, not a union.
    a = Detections([[585, 100, 665, 160]], [0.7], [0])
    b = Detections([[35, 102, 115, 164]], [0.6], [0])  # 587..667 in the frame
    nms = tiles.merge_detections([a, b], windows, 1242, 375, iou=0.45, top_k=100)
    assert len(nms) == 1 and nms.boxes[0].tolist() == [585, 100, 665, 160]
    # A truck is not merged into a car; the frame's own border is not a cut.
    edge = Detections([[0, 100, 60, 200]], [0.4], [1])
    other = tiles.merge_detections([edge, b], windows, 1242, 375, iou=0.45, top_k=100)
    assert len(other) == 2 and not tiles.cut_flags(edge.boxes.astype(np.float64), windows[0], 1242, 375).any()
    assert tiles.cut_flags(np.array([[500.0, 100, 690, 260]]), windows[0], 1242, 375).tolist() == [tiles.CUT_X]


# --- the tiled Detector on real frames --------------------------------------------------------------------------


def _by_hand(plain: Detector, frames: list[np.ndarray], spec: str) -> list[Detections]:
    """The windows cut by hand, run through an untiled Detector in one batch, shifted and merged: what tiles promise."""
    crops, plans = [], []
    for frame in frames:
        windows = tiles.plan(cfg.parse_tiles(spec), frame.shape[1], frame.shape[0])
        crops += [np.ascontiguousarray(frame[y0:y1, x0:x1]) for x0, y0, x1, y1 in windows]
        plans.append((windows, frame.shape[1], frame.shape[0]))
    found, out = plain.detect_batch(crops), []
    for windows, width, height in plans:
        out.append(tiles.merge_detections(found[: len(windows)], windows, width, height, plain.iou, plain.top_k))
        found = found[len(windows):]
    return out


def test_all_windows_of_all_frames_in_one_network_call(plain, kitti_frames, wide_frame, monkeypatch):
    det = Detector(conf=0.05, threads=2, tiles="3x1+full")
    calls = []
    infer = det.pipeline.infer
    monkeypatch.setattr(det.pipeline, "infer", lambda batch: calls.append(len(batch)) or infer(batch))
    frames = [*kitti_frames[:3], wide_frame]
    found = det.detect_batch(frames)
    assert calls == [4 * len(frames)]
    assert det.info["tiles"] == "3x1+full"
    for got, want in zip(found, _by_hand(plain, frames, "3x1+full"), strict=True):
        _same(got, want)
    assert sum(len(d) for d in found) > 0


def test_auto_tiles_kitti_and_leaves_16_9_frames_exactly_as_they_were(plain, tiled, kitti_frames, wide_frame):
    _same(tiled.detect(wide_frame), plain.detect(wide_frame))
    boxes = tiled.detect(kitti_frames[0])
    assert len(boxes) != len(plain.detect(kitti_frames[0])) or not np.array_equal(boxes.boxes,
                                                                                   plain.detect(kitti_frames[0]).boxes)
    assert (boxes.boxes[:, 2] <= kitti_frames[0].shape[1]).all() and (boxes.boxes >= 0).all()


def test_prepare_tiles_ahead_and_a_whole_frame_resize_is_refused(tiled, plain, kitti_frames, wide_frame):
    ahead = tiled.prepare(kitti_frames[1])
    assert isinstance(ahead, tiles.Tiled) and len(ahead.inputs) == 3
    _same(tiled.detect(ahead), tiled.detect(kitti_frames[1]))
    _same(plain.detect(ahead), plain.detect(kitti_frames[1]))  # still a Resized: an untiled Detector runs it whole
    with pytest.raises(FrameError, match="before it could be tiled"):
        tiled.detect(prepare(kitti_frames[1]))
    _same(tiled.detect(prepare(wide_frame)), plain.detect(wide_frame))  # auto leaves it whole: nothing lost


def test_step_by_step_calls_refuse_tiles(tiled, kitti_frames):
    for call in (lambda: tiled.network_input(kitti_frames[:1]), lambda: tiled.raw_outputs(kitti_frames[:1]),
                 lambda: tiled.decode(np.zeros((1, 11, 11, 13), np.float32), [(1242, 375)])):
        with pytest.raises(UsageError, match="tiles="):
            call()


def test_threads_share_one_tiled_detector(tiled, kitti_frames, wide_frame):
    frames = [kitti_frames[0], wide_frame, kitti_frames[1]]
    want = [tiled.detect(f) for f in frames]
    got: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            got[k] = [tiled.detect(frames[(k + i) % len(frames)]) for i in range(len(frames))]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 3
    for k, results in got.items():
        for i, d in enumerate(results):
            _same(d, want[(k + i) % len(frames)])


def test_track_with_tiles(tiled, kitti_frames):
    pytest.importorskip("supervision")
    out = list(tiled.track(kitti_frames[:2]))
    assert len(out) == 2 and all(d.track_ids is not None for d in out) and len(out[0]) > 0


def test_cli_detect_and_eval_with_tiles(tmp_path, kitti_dir, kitti_images):
    from conftest import tiny_dataset

    jsonl = tmp_path / "d.jsonl"
    assert main(["detect", str(kitti_images[0]), "--tiles", "auto", "--jsonl", str(jsonl), "--no-progress",
                 "--conf", "0.05", "--track"]) == 0
    assert json.loads(jsonl.read_text().splitlines()[0])["detections"]
    data = tiny_dataset(kitti_dir, tmp_path / "data", [p.name for p in kitti_images[:4]])
    out = tmp_path / "e.json"
    assert main(["eval", str(shipped_model("fp32")), "--data", str(data), "--tiles", "2x1+full", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["tiles"] == "2x1+full"
