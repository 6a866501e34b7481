"""Training augmentation as in the YOLO v1 paper and the original Keras project, on numpy + OpenCV.

One cv2.warpAffine scales the frame about its centre (0.8-1.2, stretched in width against height
by up to `aspect`) and shifts it by up to 20% of its width/height (same size out, black border);
then saturation and value (brightness) are scaled in HSV by up to a factor of 1.5 either way; then
the frame is flipped left-right with probability 0.5.

Boxes go through the same affine. Pixel i spans [i, i+1) in box coordinates while OpenCV maps pixel
centres, so the warp matrix is the box matrix shifted by half a pixel (see `_cv2_matrix`). After the warp
boxes are clipped to the frame, and dropped when less than `min_visible` (25%) of their area stays
inside it: a sliver of a car at the border is not a car the network should be asked to find.

Two options of the recipe (issue 20; off by default, TrainConfig.zoom and .mosaic):

- zoom-in (`zoom` > 1): the affine also enlarges a random crop of 1/z of the frame to the whole
  frame, z drawn log-uniformly in [1, zoom], so distant cars are seen larger; the same one affine,
  so boxes and pixels move together as before.
- mosaic (`draw_mosaic`): four frames at half size in a 2x2 grid whose tiles meet at a random point
  (YOLOv4/YOLOX), then the usual affine, HSV gains and flip over the whole mosaic. Each tile shows only
  inside its quadrant; its boxes are clipped to what shows and dropped below `min_visible`, as at the
  frame's border.

Works on any frame size: apply it to the resized network input (cheapest) or to the original frame.
No torch here, so it is tested cheaply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

MIN_VISIBLE = 0.25
MOSAIC_CENTRE = (0.25, 0.75)  # a mosaic's tiles meet at a point drawn in this range of the width and of the height


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the random transform; `matrix` maps box coordinates (x, y) -> (x', y')."""

    matrix: np.ndarray  # (2, 3) float64
    saturation: float  # gain on HSV saturation
    value: float  # gain on HSV value
    flip: bool


def draw_params(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    translate: float = 0.2,
    scale: tuple[float, float] = (0.8, 1.2),
    saturation: float = 1.5,
    value: float = 1.5,
    flip: float = 0.5,
    aspect: float = 1.0,
    zoom: float = 1.0,
) -> AugmentParams:
    """Draw a transform for a width x height frame. saturation/value: gains drawn log-uniformly in [1/g, g];
    aspect: the width/height stretch drawn log-uniformly in [1/aspect, aspect] (1: none); zoom: a crop of
    1/z of the frame, z log-uniform in [1, zoom], at a uniformly drawn place inside it, enlarged to the
    whole frame before the scale and shift (1: none)."""
    s = rng.uniform(*scale)
    tx, ty = rng.uniform(-translate, translate, size=2) * (width, height)
    gains = np.exp(rng.uniform(-1, 1, size=2) * np.log([saturation, value]))
    flipped = bool(rng.random() < flip)
    # Drawn last, so the other draws are those of aspect=1 with the same generator.
    stretch = np.sqrt(np.exp(rng.uniform(-1, 1) * np.log(aspect))) if aspect > 1 else 1.0
    sx, sy = s * stretch, s / stretch
    # Scale about the frame's centre (width/2, height/2 in box coordinates), then shift.
    matrix = np.array([[sx, 0.0, (1 - sx) * width / 2 + tx], [0.0, sy, (1 - sy) * height / 2 + ty]])
    if zoom > 1:  # drawn after everything else: zoom=1 keeps every other draw of the same generator
        z = float(np.exp(rng.uniform(0.0, np.log(zoom))))
        x0, y0 = rng.uniform(0.0, 1.0, size=2) * (width, height) * (1 - 1 / z)  # the crop's top-left corner
        matrix = _compose(matrix, np.array([[z, 0.0, -z * x0], [0.0, z, -z * y0]]))
    return AugmentParams(matrix, float(gains[0]), float(gains[1]), flipped)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The (2, 3) affine of `inner` then `outer`."""
    return np.hstack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]])


def _cv2_matrix(matrix: np.ndarray) -> np.ndarray:
    """Box matrix -> cv2.warpAffine matrix: OpenCV's pixel i is at coordinate i, ours at i + 0.5."""
    m = matrix.astype(np.float64).copy()
    m[:, 2] += m[:, :2].sum(axis=1) * 0.5 - 0.5
    return m


def warp_boxes(
    boxes: np.ndarray, matrix: np.ndarray, width: int, height: int, min_visible: float = MIN_VISIBLE,
    region: tuple[float, float, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes through an axis-aligned affine, clipped to the frame (or to `region`, x1, y1, x2, y2 inside it:
    a mosaic tile's share); returns (boxes, keep mask)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x = boxes[:, [0, 2]] * matrix[0, 0] + matrix[0, 2]
    y = boxes[:, [1, 3]] * matrix[1, 1] + matrix[1, 2]
    warped = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)
    area = (warped[:, 2] - warped[:, 0]) * (warped[:, 3] - warped[:, 1])
    if region is None:
        clipped = warped.clip(0.0, [width, height, width, height])
    else:
        x1, y1, x2, y2 = region
        clipped = warped.clip([x1, y1, x1, y1], [x2, y2, x2, y2])
    inside = np.maximum(clipped[:, 2] - clipped[:, 0], 0) * np.maximum(clipped[:, 3] - clipped[:, 1], 0)
    keep = (inside > 0) & (inside >= min_visible * area)
    return clipped[keep].astype(np.float32), keep


def jitter_hsv(image: np.ndarray, saturation: float, value: float) -> np.ndarray:
    """Scale a BGR uint8 frame's HSV saturation and value by the given gains (hue and geometry unchanged)."""
    if saturation == 1.0 and value == 1.0:
        return image
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    levels = np.arange(256, dtype=np.float32)
    hsv[..., 1] = cv2.LUT(hsv[..., 1], np.clip(levels * saturation + 0.5, 0, 255).astype(np.uint8))
    hsv[..., 2] = cv2.LUT(hsv[..., 2], np.clip(levels * value + 0.5, 0, 255).astype(np.uint8))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes of a left-right flipped frame (pixel i -> width - 1 - i, so x -> width - x)."""
    out = np.array(boxes, np.float32, copy=True).reshape(-1, 4)
    out[:, [0, 2]] = width - out[:, [2, 0]]
    return out


def apply(
    image: np.ndarray, boxes: np.ndarray, class_ids: np.ndarray, params: AugmentParams, *, min_visible: float = MIN_VISIBLE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply one drawn transform to a BGR uint8 frame and its (K, 4) x1, y1, x2, y2 boxes."""
    height, width = image.shape[:2]
    if not np.allclose(params.matrix, [[1, 0, 0], [0, 1, 0]]):
        image = cv2.warpAffine(image, _cv2_matrix(params.matrix), (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    boxes, keep = warp_boxes(boxes, params.matrix, width, height, min_visible)
    class_ids = np.asarray(class_ids)[keep]
    image = jitter_hsv(image, params.saturation, params.value)
    if params.flip:
        image = cv2.flip(image, 1)
        boxes = flip_boxes(boxes, width)
    return image, boxes, class_ids


def augment(
    image: np.ndarray,
    boxes: np.ndarray,
    class_ids: np.ndarray,
    rng: np.random.Generator,
    *,
    translate: float = 0.2,
    scale: tuple[float, float] = (0.8, 1.2),
    saturation: float = 1.5,
    value: float = 1.5,
    flip: float = 0.5,
    aspect: float = 1.0,
    zoom: float = 1.0,
    min_visible: float = MIN_VISIBLE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random translate + scale (one warpAffine), HSV saturation/value jitter and left-right flip.

    image: HxWx3 uint8 BGR; boxes: (K, 4) x1, y1, x2, y2 pixels; class_ids: (K,). Returns the frame
    (same size), the boxes that keep at least `min_visible` of their area inside it (clipped) and their
    class ids. translate: fraction of width/height; scale: range of the zoom factor; saturation, value:
    largest gain factor (drawn in [1/g, g]); flip: probability of a left-right flip; aspect: largest
    width/height stretch (cameras differ: KITTI's 3.3:1 frames squash to the square input far more
    than a 16:9 dashcam's, so cars there look narrower); zoom: largest zoom-in (`draw_params`).
    """
    if not (0 <= translate < 1 and 0 < scale[0] <= scale[1] and saturation >= 1 and value >= 1 and 0 <= flip <= 1
            and aspect >= 1 and zoom >= 1):
        raise ValueError(
            f"augment: need 0 <= translate < 1, 0 < scale[0] <= scale[1], saturation/value >= 1, 0 <= flip <= 1, "
            f"aspect >= 1, zoom >= 1; got translate={translate}, scale={scale}, saturation={saturation}, "
            f"value={value}, flip={flip}, aspect={aspect}, zoom={zoom}"
        )
    height, width = image.shape[:2]
    params = draw_params(rng, width, height, translate=translate, scale=scale, saturation=saturation,
                         value=value, flip=flip, aspect=aspect, zoom=zoom)
    return apply(image, boxes, class_ids, params, min_visible=min_visible)


@dataclass(frozen=True)
class SquareDraw:
    """One draw of `augment` for a frame given as its square copy: the output boxes and what the pixels need.

    `to_input` maps the square copy's box coordinates to the network input's: x' = to_input[0, 0] * x +
    to_input[0, 2] (and the same in y); then HSV gains and the flip apply at the input's size.
    """

    to_input: np.ndarray  # (2, 3) float64, axis-aligned
    saturation: float
    value: float
    flip: bool
    boxes: np.ndarray  # (K, 4) float32 in the frame's pixels, after the flip
    class_ids: np.ndarray


def draw_square(
    side: int,
    width: int,
    height: int,
    boxes: np.ndarray,
    class_ids: np.ndarray,
    rng: np.random.Generator,
    out_size: int,
    *,
    aspect: float = 1.0,
    zoom: float = 1.0,
    min_visible: float = MIN_VISIBLE,
) -> SquareDraw:
    """The draws `augment(frame, ...)` makes from `rng` for a width x height frame, its boxes and class ids
    exactly, and the one affine from its side x side square copy straight to the out_size input (the
    squash, the augmentation's affine and the resize composed)."""
    params = draw_params(rng, width, height, aspect=aspect, zoom=zoom)
    boxes, keep = warp_boxes(boxes, params.matrix, width, height, min_visible)
    class_ids = np.asarray(class_ids)[keep]
    if params.flip:
        boxes = flip_boxes(boxes, width)
    m = params.matrix
    # square pixels -> frame pixels (x * width / side) -> augmented frame -> input pixels (x * out_size / width)
    to_input = np.array([[m[0, 0] * out_size / side, 0.0, m[0, 2] * out_size / width],
                         [0.0, m[1, 1] * out_size / side, m[1, 2] * out_size / height]])
    return SquareDraw(to_input, params.saturation, params.value, params.flip, boxes, class_ids)


def augment_square(
    square: np.ndarray,
    width: int,
    height: int,
    boxes: np.ndarray,
    class_ids: np.ndarray,
    rng: np.random.Generator,
    out_size: int,
    *,
    aspect: float = 1.0,
    zoom: float = 1.0,
    min_visible: float = MIN_VISIBLE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`augment` of a width x height frame, given only its copy squashed to a square (train/cache.py).

    The same draws from `rng` as `augment(frame, ...)`, so the boxes and class ids are exactly
    those; the pixels come from one warpAffine of the square copy straight to the out_size x
    out_size network input (`draw_square`), then the HSV jitter and the flip at that size.
    Returns the BGR uint8 input and the boxes in the frame's pixels. train/device_augment.py
    makes the same pixels from the same draw on the training device. A zoom enlarges the square
    copy (LARGE pixels a side), so zoomed pixels are softer than from the full frame.
    """
    draw = draw_square(square.shape[0], width, height, boxes, class_ids, rng, out_size, aspect=aspect, zoom=zoom,
                       min_visible=min_visible)
    image = cv2.warpAffine(square, _cv2_matrix(draw.to_input), (out_size, out_size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    image = jitter_hsv(image, draw.saturation, draw.value)
    if draw.flip:
        image = cv2.flip(image, 1)
    return image, draw.boxes, draw.class_ids


Frame = tuple[int, int, np.ndarray, np.ndarray]  # width, height, (K, 4) boxes, (K,) class ids of one frame


@dataclass(frozen=True)
class MosaicDraw:
    """One draw of a 2x2 mosaic of frames[0] (whose size the output has) and three others.

    Tile k (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) shows frames[order[k]]:
    `matrices[k]` maps that frame's box coordinates to the output's (the tile's placement, then the
    augmentation's affine), and its pixels show only inside `regions[k]` (x1, y1, x2, y2 in the output,
    before the flip). Then the HSV gains and the flip apply to the whole output, as in `augment`.
    """

    order: tuple[int, ...]
    matrices: tuple[np.ndarray, ...]
    regions: tuple[tuple[float, float, float, float], ...]
    saturation: float
    value: float
    flip: bool
    boxes: np.ndarray  # (K, 4) float32 in the output's pixels, after the flip
    class_ids: np.ndarray


def draw_mosaic(
    frames: Sequence[Frame],
    rng: np.random.Generator,
    *,
    aspect: float = 1.0,
    zoom: float = 1.0,
    min_visible: float = MIN_VISIBLE,
) -> MosaicDraw:
    """Draw a mosaic of four frames (width, height, boxes, class ids), the output the size of frames[0].

    Each frame is shrunk to half the output's width and height (what the network sees is the frame
    squashed to its square input anyway, so a tile looks like its frame at half size, whatever the
    cameras' aspect ratios) and placed with a corner at the meeting point, drawn in MOSAIC_CENTRE of the
    output; a tile that does not reach the output's edge leaves black there, one that passes it is cut.
    Which frame goes to which quadrant is drawn too. Then one `draw_params` (scale, shift, stretch,
    zoom, gains, flip) for the whole mosaic. Boxes are clipped to what shows of their tile and dropped
    when less than `min_visible` of their (placed and warped) area shows.
    """
    if len(frames) != 4:
        raise ValueError(f"a mosaic is of 4 frames, got {len(frames)}")
    width, height = frames[0][0], frames[0][1]
    order = tuple(int(j) for j in rng.permutation(4))
    cx, cy = rng.uniform(*MOSAIC_CENTRE, size=2) * (width, height)
    params = draw_params(rng, width, height, aspect=aspect, zoom=zoom)
    m = params.matrix
    matrices, regions, all_boxes, all_ids = [], [], [], []
    for k, j in enumerate(order):
        w, h, boxes, class_ids = frames[j]
        right, bottom = k % 2 == 1, k >= 2
        ox, oy = (cx if right else cx - width / 2), (cy if bottom else cy - height / 2)  # the tile's top-left
        matrix = _compose(m, np.array([[width / (2 * w), 0.0, ox], [0.0, height / (2 * h), oy]]))
        # The tile's quadrant of the mosaic (and within it the tile's own extent), through the affine, in the output.
        x1, x2 = max(cx if right else 0.0, ox), min(width if right else cx, ox + width / 2)
        y1, y2 = max(cy if bottom else 0.0, oy), min(height if bottom else cy, oy + height / 2)
        rx1, rx2 = np.clip([m[0, 0] * x1 + m[0, 2], m[0, 0] * x2 + m[0, 2]], 0.0, width)
        ry1, ry2 = np.clip([m[1, 1] * y1 + m[1, 2], m[1, 1] * y2 + m[1, 2]], 0.0, height)
        region = (float(rx1), float(ry1), float(max(rx1, rx2)), float(max(ry1, ry2)))
        kept, keep = warp_boxes(boxes, matrix, width, height, min_visible, region=region)
        matrices.append(matrix)
        regions.append(region)
        all_boxes.append(kept)
        all_ids.append(np.asarray(class_ids, np.int64).reshape(-1)[keep])
    out_boxes, out_ids = np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_ids)
    if params.flip:
        out_boxes = flip_boxes(out_boxes, width)
    return MosaicDraw(order, tuple(matrices), tuple(regions), params.saturation, params.value, params.flip,
                      out_boxes, out_ids)


def _paste_tiles(images: Sequence[np.ndarray], matrices: Sequence[np.ndarray],
                 regions: Sequence[tuple[float, float, float, float]], out_width: int, out_height: int) -> np.ndarray:
    """Each image warped by its box-coordinate matrix, kept where the centres of the output pixels fall in its region."""
    canvas = np.zeros((out_height, out_width, 3), np.uint8)
    for image, matrix, (x1, y1, x2, y2) in zip(images, matrices, regions, strict=True):
        # Pixel u (centre u + 0.5) is inside [x1, x2) for u in [ceil(x1 - 0.5), ceil(x2 - 0.5)).
        a, b = (int(np.clip(np.ceil(v - 0.5), 0, out_width)) for v in (x1, x2))
        c, d = (int(np.clip(np.ceil(v - 0.5), 0, out_height)) for v in (y1, y2))
        if b <= a or d <= c:
            continue
        shifted = matrix.astype(np.float64).copy()
        shifted[:, 2] -= (a, c)  # only the region's pixels are made
        canvas[c:d, a:b] = cv2.warpAffine(image, _cv2_matrix(shifted), (b - a, d - c), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return canvas


def _finish(image: np.ndarray, draw: MosaicDraw) -> np.ndarray:
    image = jitter_hsv(image, draw.saturation, draw.value)
    return cv2.flip(image, 1) if draw.flip else image


def augment_mosaic(
    images: Sequence[np.ndarray],
    frames: Sequence[Frame],
    rng: np.random.Generator,
    *,
    aspect: float = 1.0,
    zoom: float = 1.0,
    min_visible: float = MIN_VISIBLE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A mosaic (`draw_mosaic`) of four full BGR uint8 frames: the output the size of images[0], its boxes and
    class ids. frames[j] are images[j]'s width, height, boxes and class ids."""
    draw = draw_mosaic(frames, rng, aspect=aspect, zoom=zoom, min_visible=min_visible)
    height, width = images[0].shape[:2]
    image = _paste_tiles([images[j] for j in draw.order], draw.matrices, draw.regions, width, height)
    return _finish(image, draw), draw.boxes, draw.class_ids


def augment_mosaic_square(
    squares: Sequence[np.ndarray],
    frames: Sequence[Frame],
    rng: np.random.Generator,
    out_size: int,
    *,
    aspect: float = 1.0,
    zoom: float = 1.0,
    min_visible: float = MIN_VISIBLE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`augment_mosaic` from the frames' square copies (train/cache.py), straight to the out_size network input:
    the same draws, boxes and class ids exactly; each tile one warpAffine of its square copy (as augment_square)."""
    draw = draw_mosaic(frames, rng, aspect=aspect, zoom=zoom, min_visible=min_visible)
    width, height = frames[0][0], frames[0][1]
    to_input = np.array([[out_size / width, 0.0, 0.0], [0.0, out_size / height, 0.0]])
    matrices, regions = [], []
    for j, matrix, (x1, y1, x2, y2) in zip(draw.order, draw.matrices, draw.regions, strict=True):
        side, (w, h) = squares[j].shape[0], frames[j][:2]
        from_square = np.array([[w / side, 0.0, 0.0], [0.0, h / side, 0.0]])
        matrices.append(_compose(to_input, _compose(matrix, from_square)))
        regions.append((x1 * out_size / width, y1 * out_size / height, x2 * out_size / width, y2 * out_size / height))
    image = _paste_tiles([squares[j] for j in draw.order], matrices, regions, out_size, out_size)
    return _finish(image, draw), draw.boxes, draw.class_ids


__all__ = ["MIN_VISIBLE", "MOSAIC_CENTRE", "AugmentParams", "MosaicDraw", "SquareDraw", "apply", "augment",
           "augment_mosaic", "augment_mosaic_square", "augment_square", "draw_mosaic", "draw_params", "draw_square",
           "flip_boxes", "jitter_hsv", "warp_boxes"]
