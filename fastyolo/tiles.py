"""Tiled inference: a wide frame cut into overlapping tiles, every tile through the one network call, boxes merged.

The network sees its input squashed to 224x224 (no letterbox): a 1242x375 KITTI frame (3.3:1) loses two
thirds of its width, and its distant cars shrink to a few pixels. Cut into overlapping, square-ish tiles,
each tile keeps more of the frame's pixels. The approach is SAHI's (Akyon et al., "Slicing Aided Hyper
Inference", the `sahi` package), rebuilt on this library's own steps (square-ish tiles: each is squashed
to the square input as the training frames were):

1. `plan`: the windows of a frame, `columns` x `rows` tiles of one size that cover it with `overlap` (a
   fraction of the tile's side) shared between neighbours (SAHI's overlap ratio), plus the whole frame
   if asked (SAHI's "standard prediction"); `auto` tiles only frames at least cfg.TILE_AUTO_ASPECT times
   wider than tall, in one row of as many columns as bring the tiles closest to cfg.TILE_AUTO_SHAPE
   (16:9, the shape of the frames the packaged model learnt from), plus the whole frame.
2. The Detector runs every window of every frame of one call through the same preprocess -> infer ->
   decode + NMS (fastyolo.pipeline, fastyolo.kernels) as one batch; each window's boxes come back in its
   own pixels and are shifted into the frame's.
3. `merge_detections`: class-aware greedy merging of the windows' boxes, best score first (`merge_kernel`).
   Two whole boxes: NMS (the later one goes when IoU > iou). A box that touches an inner tile edge
   (within CUT_MARGIN of the tile's side; the frame's own border does not count) is part of an object:
   it goes with the best box of its class that overlaps it by IoU > iou, or that it intersects with the
   extent the edge did not cut agreeing (IoU of the y spans >= MATCH across a vertical edge, of the x
   spans across a horizontal one). Two parts become their union (the halves of a car cut by a tile
   edge); a part beside the object seen whole (by the next tile or the whole frame) gives way to the
   whole box, whichever scored higher. SAHI's GREEDYNMM matches by intersection over the smaller box
   (IOS) and grows the kept box to the union of every match: a cut near car then swallows the small
   far cars inside its box (below plain NMS on KITTI and PandaSet: bench/RESULTS.md).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from fastyolo import cfg
from fastyolo.detections import Detections
from fastyolo.layout import INPUT_SIZE
from fastyolo.preprocess import Resized, check_frame, prepare, resize_bgr

CUT_MARGIN = 4.0 / INPUT_SIZE  # a box edge this close to an inner tile edge (fraction of the tile's side) is cut there
MATCH = 0.5  # a cut box goes with a box whose span across the cut agrees this well (IoU of the two spans)
CUT_X, CUT_Y = 1, 2  # cut at an inner left/right tile edge (the box's width is truncated), at a top/bottom one


@functools.lru_cache(maxsize=64)
def plan(spec: cfg.TileSpec, width: int, height: int, overlap: float = cfg.TILE_OVERLAP) -> np.ndarray:
    """The windows (x0, y0, x1, y1), int64 (T, 4), that a `width` x `height` frame runs as: the tiles, then
    the whole frame (if spec.full, or when the frame is not tiled). One row (0, 0, width, height): not tiled."""
    columns, rows, full = spec.columns, spec.rows, spec.full
    if spec.auto:
        if width < cfg.TILE_AUTO_ASPECT * height:
            columns, rows = 1, 1
        else:  # one row, of the columns whose tiles' width:height comes closest to TILE_AUTO_SHAPE
            aspect = width / height
            columns = min(range(2, cfg.TILE_MAX + 1),
                          key=lambda c: abs(np.log(aspect / (c - (c - 1) * overlap) / cfg.TILE_AUTO_SHAPE)))
            rows, full = 1, cfg.TILE_AUTO_FULL
    whole = np.array([[0, 0, width, height]], np.int64)
    if columns * rows == 1:
        whole.setflags(write=False)
        return whole
    xs, ys = _spans(width, columns, overlap), _spans(height, rows, overlap)
    tiles = np.array([(x0, y0, x1, y1) for y0, y1 in ys for x0, x1 in xs], np.int64)
    out = np.concatenate([tiles, whole]) if full else tiles
    out.setflags(write=False)  # cached and shared between threads
    return out


def _spans(length: int, parts: int, overlap: float) -> list[tuple[int, int]]:
    """`parts` spans of one size covering 0..length, neighbours sharing about `overlap` of a span."""
    if parts == 1:
        return [(0, length)]
    size = min(length, int(np.ceil(length / (parts - (parts - 1) * overlap))))
    step = (length - size) / (parts - 1)
    return [(round(i * step), round(i * step) + size) for i in range(parts)]


@dataclass(frozen=True, eq=False)
class Tiled(Resized):
    """A frame prepared for tiled inference (`Detector.prepare` with tiles on): every window resized.

    Still a `Resized` (image: the whole frame squashed), so a Detector without tiles runs it whole.
    """

    windows: np.ndarray  # (T, 4) x0, y0, x1, y1 in frame pixels, as `plan` gives
    inputs: tuple[Resized, ...]  # each window squashed to the network input, with the window's size


def prepare_tiled(frame: object, spec: cfg.TileSpec, overlap: float = cfg.TILE_OVERLAP) -> Resized:
    """Check and resize a frame's windows now (any thread): a `Tiled`, or a plain `Resized` where `spec`
    leaves the frame whole (auto on a frame that is not wide)."""
    frame = check_frame(frame)
    height, width = frame.shape[:2]
    windows = plan(spec, width, height, overlap)
    if len(windows) == 1:
        return prepare(frame)
    inputs = tuple(Resized(resize_bgr(frame[y0:y1, x0:x1]), int(x1 - x0), int(y1 - y0)) for x0, y0, x1, y1 in windows)
    full = next((r for r, w in zip(inputs, windows, strict=True) if w[2] - w[0] == width and w[3] - w[1] == height), None)
    return Tiled(full.image if full is not None else resize_bgr(frame), width, height, windows, inputs)


def crops(frame: np.ndarray | Resized, spec: cfg.TileSpec, overlap: float = cfg.TILE_OVERLAP
          ) -> tuple[list[np.ndarray | Resized], np.ndarray]:
    """(network inputs, windows) of one frame: views of a frame's windows (no copy), a Tiled's inputs, or a
    Resized itself where `spec` leaves its frame whole; FrameError for a Resized that `spec` would tile."""
    if isinstance(frame, Tiled):
        return list(frame.inputs), frame.windows
    if isinstance(frame, Resized):
        windows = plan(spec, frame.width, frame.height, overlap)
        if len(windows) > 1:
            from fastyolo.errors import FrameError

            raise FrameError(f"this {frame.width}x{frame.height} frame was resized to the network input before it "
                             f"could be tiled (tiles={spec}): prepare it with the tiling Detector's own "
                             "detector.prepare(frame), or pass the frame itself")
        return [frame], windows
    windows = plan(spec, frame.shape[1], frame.shape[0], overlap)
    if len(windows) == 1:
        return [frame], windows
    return [frame[y0:y1, x0:x1] for x0, y0, x1, y1 in windows], windows


@njit(cache=True, nogil=True, inline="always")
def _span_iou(a0, a1, b0, b1):
    inter = min(a1, b1) - max(a0, b0)
    union = max(a1, b1) - min(a0, b0)
    return inter / union if (inter > 0.0 and union > 0.0) else 0.0


@njit(cache=True, nogil=True)
def merge_kernel(boxes, scores, classes, cut, iou_threshold, match, top_k):
    """Greedy class-aware merge of candidate boxes (float64 (N, 4)), best score first (stable sort on -score).

    cut: per box, CUT_X if it touches an inner left/right tile edge (its width is truncated), CUT_Y for
    top/bottom, both or 0. Returns (kept candidate indices, their boxes): a kept box absorbs every later box
    of its class that it overlaps by IoU > iou_threshold; where either box is cut, also one that it
    intersects with spans that agree across the cut (IoU of the y spans >= match where a box is CUT_X,
    of the x spans where CUT_Y): the parts of one object share the extent the edge did not cut. The kept
    box stays as it is, except that two cut boxes become their union and a cut box that absorbs a whole
    one takes the whole one's box.
    """
    n = boxes.shape[0]
    order = np.argsort(-scores, kind="mergesort")  # stable: ties keep the windows' order
    absorbed = np.zeros(n, dtype=np.bool_)
    kept = np.empty(n, dtype=np.int64)
    out = np.empty((n, 4), dtype=np.float64)
    count = 0
    for r in range(n):
        if count >= top_k:
            break
        i = order[r]
        if absorbed[i]:
            continue
        x1, y1, x2, y2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        own = cut[i]
        for s in range(r + 1, n):
            j = order[s]
            if absorbed[j] or classes[j] != classes[i]:
                continue
            iw = min(x2, boxes[j, 2]) - max(x1, boxes[j, 0])
            ih = min(y2, boxes[j, 3]) - max(y1, boxes[j, 1])
            inter = iw * ih if (iw > 0.0 and ih > 0.0) else 0.0
            union = (x2 - x1) * (y2 - y1) + (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1]) - inter
            over = inter / union if union > 0.0 else 0.0
            either = own | cut[j]
            if either == 0:
                if over > iou_threshold:
                    absorbed[j] = True
                continue
            same = over > iou_threshold or (
                inter > 0.0
                and ((either & CUT_X) == 0 or _span_iou(y1, y2, boxes[j, 1], boxes[j, 3]) >= match)
                and ((either & CUT_Y) == 0 or _span_iou(x1, x2, boxes[j, 0], boxes[j, 2]) >= match)
            )
            if same:
                absorbed[j] = True
                if own != 0 and cut[j] != 0:  # two parts of one object: their union
                    x1, y1 = min(x1, boxes[j, 0]), min(y1, boxes[j, 1])
                    x2, y2 = max(x2, boxes[j, 2]), max(y2, boxes[j, 3])
                    own = own & cut[j]
                elif own != 0:  # a part, and the object seen whole (another tile, the whole frame): the whole box
                    x1, y1, x2, y2 = boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3]
                    own = 0
        kept[count] = i
        out[count, 0], out[count, 1], out[count, 2], out[count, 3] = x1, y1, x2, y2
        count += 1
    return kept[:count], out[:count]


def cut_flags(boxes: np.ndarray, window: np.ndarray, width: int, height: int) -> np.ndarray:
    """Per box of a window (frame pixels): CUT_X where it touches the window's inner left or right edge (an edge
    that is not the frame's), CUT_Y for top or bottom, int8."""
    x0, y0, x1, y1 = (float(v) for v in window)
    mx, my = CUT_MARGIN * (x1 - x0), CUT_MARGIN * (y1 - y0)
    at_x = np.zeros(len(boxes), dtype=bool)
    at_y = np.zeros(len(boxes), dtype=bool)
    if x0 > 0:
        at_x |= boxes[:, 0] <= x0 + mx
    if x1 < width:
        at_x |= boxes[:, 2] >= x1 - mx
    if y0 > 0:
        at_y |= boxes[:, 1] <= y0 + my
    if y1 < height:
        at_y |= boxes[:, 3] >= y1 - my
    return (at_x * CUT_X + at_y * CUT_Y).astype(np.int8)


def merge_detections(found: Sequence[Detections], windows: np.ndarray, width: int, height: int, iou: float,
                     top_k: int, match: float = MATCH) -> Detections:
    """One frame's Detections from its windows' (each in its window's pixels, in `windows` order)."""
    if len(windows) == 1:
        return found[0]  # not tiled: the kernel's own NMS result, unchanged
    parts = [d.boxes.astype(np.float64) + w[[0, 1, 0, 1]] for d, w in zip(found, windows, strict=True)]
    boxes = np.concatenate(parts) if parts else np.zeros((0, 4))
    scores = np.concatenate([d.scores for d in found])
    classes = np.concatenate([d.class_ids for d in found])
    cut = np.concatenate([cut_flags(b, w, width, height) for b, w in zip(parts, windows, strict=True)])
    if not len(scores):
        return Detections.empty()
    kept, merged = merge_kernel(boxes, scores.astype(np.float32), classes.astype(np.int32), cut, float(iou),
                                float(match), int(top_k))
    return Detections(merged.astype(np.float32), scores[kept], classes[kept])


def warmup() -> None:
    """Compile (or load from numba's cache) the merge kernel before the first timed frame."""
    merge_kernel(np.zeros((1, 4)), np.zeros(1, np.float32), np.zeros(1, np.int32), np.zeros(1, np.int8), 0.5, 0.5, 1)
