"""Test-time views for the labelling teachers: the full frame, overlapping zoomed tiles, the flip.

A COCO teacher sees a 1242x375 KITTI frame shrunk 3x into its 416x416 input, where distant cars are a
few pixels tall. Tiles of the teacher's input size / zoom (277x277 at the default zoom 1.5), enlarged
into its input, show it the same cars at 1.5x the frame's resolution (zoom 1 would be native scale; 1.5
measured better on KITTI and PandaSet, bench/RESULTS.md "Teachers"); the horizontal flip gives a second
look at everything. Each (teacher, view) is one "model" for the fusion (fastyolo.fusion): its boxes go
back to frame pixels, boxes a tile cut at an edge inside the frame are dropped (the full frame or the
neighbouring tile sees them whole), and the tile's region travels along so that a tile does not vote
against a box it could not see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fastyolo.detections import Detections
from fastyolo.errors import FastYoloError
from fastyolo.fusion import CONF_TYPES, pooled_nms, weighted_boxes_fusion

FLIPS = ("none", "full", "all")  # no flip; the full frame flipped too; every view flipped too
FUSIONS = ("wbf", "nms")
# The labelling defaults, each chosen by measurement (bench/teachers.py, bench/RESULTS.md "Teachers").
DEFAULT_TILES = True
DEFAULT_OVERLAP = 0.25  # of the tile's width/height shared with the next tile
DEFAULT_TILE_ZOOMS = (1.5,)  # tile sides = the teacher's input / zoom: 1 is native scale, 1.5 shows cars 1.5x larger
DEFAULT_FLIP = "all"
DEFAULT_FUSION = "wbf"
DEFAULT_FUSION_IOU = 0.55  # ensemble-boxes' default
DEFAULT_CONF_TYPE = "avg"
DEFAULT_AGNOSTIC = False  # clusters per class: Truck AP 0.59 against 0.48 class-agnostic on kitti_tiny
DEFAULT_VIEW_CONF = 0.05  # each view's boxes above this go into the fusion
# The fused score a label needs: the best Car F1 on kitti_tiny at native-scale tiles (recall 0.75, precision 0.75);
# with the zoomed tiles, recall 0.81 at precision 0.86 by KITTI's DontCare rule (0.68 counted strictly).
DEFAULT_CONF = 0.37
EDGE_MARGIN = 3.0  # px: a tile box this close to an edge inside the frame was cut by the tile


@dataclass(frozen=True)
class View:
    """A crop of the frame (x1, y1, x2, y2 in pixels, x2/y2 exclusive), mirrored left-right if `flip`."""

    x1: int
    y1: int
    x2: int
    y2: int
    flip: bool = False
    tile: bool = False
    zoom: float = 1.0  # a tile's magnification in the teacher: its input side / the tile's

    @property
    def name(self) -> str:
        where = f"tile {self.x1},{self.y1} {self.x2 - self.x1}x{self.y2 - self.y1}" if self.tile else "full"
        where += f" zoom {self.zoom:g}" if self.tile and self.zoom != 1.0 else ""
        return where + (" flipped" if self.flip else "")

    def crop(self, image: np.ndarray) -> np.ndarray:
        part = image[self.y1:self.y2, self.x1:self.x2]
        return np.ascontiguousarray(part[:, ::-1] if self.flip else part)

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes in the crop's pixels -> the frame's."""
        b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        if self.flip:
            b[:, [0, 2]] = (self.x2 - self.x1) - b[:, [2, 0]]
        return b + np.array([self.x1, self.y1, self.x1, self.y1], np.float32)

    def inner(self, width: int, height: int, margin: float = EDGE_MARGIN) -> tuple[float, float, float, float]:
        """The region whose boxes this view sees whole: its crop, less `margin` at edges inside the frame."""
        return (self.x1 + margin if self.x1 > 0 else 0.0, self.y1 + margin if self.y1 > 0 else 0.0,
                self.x2 - margin if self.x2 < width else float(width),
                self.y2 - margin if self.y2 < height else float(height))


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Offsets of tiles `tile` long covering `length`, neighbours sharing at least `overlap` of a tile."""
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile * (1.0 - overlap))) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def check_zooms(zooms: Sequence[float], name: str = "tile zooms") -> None:
    """The one rule for tile zooms (label's --tile-zoom checks it before any teacher or Ray worker starts)."""
    if not zooms or any(not 1.0 <= z <= 4.0 for z in zooms) or len(set(zooms)) != len(zooms):
        raise FastYoloError(f"{name}: need distinct zooms in [1, 4] (1 = native scale), got "
                            + (" ".join(f"{z:g}" for z in zooms) or "none"))


def plan_views(width: int, height: int, tile: tuple[int, int] | None, overlap: float = DEFAULT_OVERLAP,
               flip: str = DEFAULT_FLIP, zooms: Sequence[float] = DEFAULT_TILE_ZOOMS) -> list[View]:
    """The views of a width x height frame: the full frame, then tiles (tile = (w, h), the teacher's input in
    frame pixels, None for none), for each zoom tiles of tile / zoom (only where the frame is larger than
    one), each view followed by its flip as `flip` says."""
    if flip not in FLIPS:
        raise FastYoloError(f"flip must be one of {', '.join(FLIPS)}, got {flip!r}")
    if not 0.0 <= overlap < 1.0:
        raise FastYoloError(f"tile overlap must be in [0, 1), got {overlap}")
    check_zooms(zooms)
    views = [View(0, 0, width, height)]
    if flip != "none":
        views.append(View(0, 0, width, height, flip=True))
    for zoom in zooms if tile is not None else ():
        tw, th = min(round(tile[0] / zoom), width), min(round(tile[1] / zoom), height)
        if width <= tw and height <= th:
            continue
        for y in tile_starts(height, th, overlap):
            for x in tile_starts(width, tw, overlap):
                views.append(View(x, y, x + tw, y + th, tile=True, zoom=zoom))
                if flip == "all":
                    views.append(View(x, y, x + tw, y + th, flip=True, tile=True, zoom=zoom))
    return views


def view_detections(teacher, image: np.ndarray, view: View, conf: float) -> Detections:
    """One teacher's boxes in one view, in frame pixels; a tile's boxes cut by an inner edge dropped."""
    d = teacher.detect(view.crop(image), conf)
    boxes = view.to_frame(d.boxes)
    if view.tile and len(boxes):
        h, w = image.shape[:2]
        x1, y1, x2, y2 = view.inner(w, h)
        keep = (boxes[:, 0] >= x1) & (boxes[:, 1] >= y1) & (boxes[:, 2] <= x2) & (boxes[:, 3] <= y2)
        return Detections(boxes[keep], d.scores[keep], d.class_ids[keep])
    return Detections(boxes, d.scores, d.class_ids)


@dataclass
class Ensemble:
    """Teachers x views, fused: `detect(frame)` gives the labels, `describe()` what sources.json records.

    weights: one per teacher (default 1). tiles: tiles of each teacher's input size / each of zooms.
    view_conf: each view's score threshold; conf: the fused score a box needs.
    """

    teachers: Sequence
    weights: Sequence[float] | None = None
    tiles: bool = DEFAULT_TILES
    overlap: float = DEFAULT_OVERLAP
    zooms: tuple[float, ...] = DEFAULT_TILE_ZOOMS
    flip: str = DEFAULT_FLIP
    fusion: str = DEFAULT_FUSION
    fusion_iou: float = DEFAULT_FUSION_IOU
    conf_type: str = DEFAULT_CONF_TYPE
    agnostic: bool = DEFAULT_AGNOSTIC
    visible: bool = True
    view_conf: float = DEFAULT_VIEW_CONF
    conf: float = DEFAULT_CONF

    def __post_init__(self) -> None:
        if not self.teachers:
            raise FastYoloError("at least one teacher is needed")
        if self.weights is not None and len(self.weights) != len(self.teachers):
            raise FastYoloError(f"{len(self.weights)} teacher weights for {len(self.teachers)} teachers")
        if self.fusion not in FUSIONS:
            raise FastYoloError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.conf_type not in CONF_TYPES:
            raise FastYoloError(f"fusion score must be one of {', '.join(CONF_TYPES)}, got {self.conf_type!r}")
        for name, value in (("fusion IoU", self.fusion_iou),):
            if not 0.0 < value <= 1.0:
                raise FastYoloError(f"{name} must be in (0, 1], got {value}")
        for name, value in (("view score threshold", self.view_conf), ("score threshold", self.conf)):
            if not 0.0 <= value < 1.0:
                raise FastYoloError(f"{name} must be in [0, 1), got {value}")
        self.zooms = tuple(float(z) for z in self.zooms)
        plan_views(2, 2, None, self.overlap, self.flip, self.zooms)  # checks flip, overlap and zooms once, up front

    def views(self, teacher, width: int, height: int) -> list[View]:
        h, w = teacher.input_size
        return plan_views(width, height, (w, h) if self.tiles else None, self.overlap, self.flip, self.zooms)

    def view_outputs(self, image: np.ndarray) -> list[tuple[int, View, Detections]]:
        """(teacher index, view, boxes above view_conf in frame pixels) for every teacher and view."""
        h, w = image.shape[:2]
        return [(t, v, view_detections(teacher, image, v, self.view_conf))
                for t, teacher in enumerate(self.teachers) for v in self.views(teacher, w, h)]

    def fuse(self, outputs: list[tuple[int, View, Detections]], width: int, height: int) -> Detections:
        """The views' boxes fused into one Detections (every score, best first; `conf` not applied)."""
        dets = [d for _, _, d in outputs]
        if self.fusion == "nms" or len(dets) == 1:
            return pooled_nms(dets, self.fusion_iou, agnostic=self.agnostic)
        weights = [1.0 if self.weights is None else float(self.weights[t]) for t, _, _ in outputs]
        visible = [v.inner(width, height) if v.tile else None for _, v, _ in outputs] if self.visible else None
        return weighted_boxes_fusion(dets, weights, self.fusion_iou, self.conf_type, visible, self.agnostic)

    def detect(self, image: np.ndarray) -> Detections:
        """The labels of one frame: fused boxes with a score of at least `conf`, best first."""
        h, w = image.shape[:2]
        fused = self.fuse(self.view_outputs(image), w, h)
        keep = fused.scores >= self.conf
        return Detections(fused.boxes[keep], fused.scores[keep], fused.class_ids[keep])

    def describe(self, width: int | None = None, height: int | None = None) -> dict:
        """Every teacher and the fusion settings; with a frame size, the views each teacher ran on it."""
        teachers = []
        for i, t in enumerate(self.teachers):
            entry = {**t.describe(), "weight": 1.0 if self.weights is None else float(self.weights[i])}
            if width and height:
                entry["views"] = [v.name for v in self.views(t, width, height)]
            teachers.append(entry)
        return {"teachers": teachers, "tiles": self.tiles, "tile_overlap": self.overlap,
                "tile_zooms": list(self.zooms), "flip": self.flip,
                "fusion": self.fusion, "fusion_iou": self.fusion_iou, "fusion_score": self.conf_type,
                "fusion_classes": "agnostic" if self.agnostic else "per-class", "tile_aware": self.visible,
                "view_conf": self.view_conf, "conf": self.conf}
