"""A COCO detector in the YOLOX ONNX layout, used as a teacher to label footage (`fastyolo label`).

Follows YOLOX's published ONNX demo (Megvii-BaseDetection/YOLOX: `yolox/data/data_augment.py:preproc`,
`yolox/utils/demo_utils.py:demo_postprocess/multiclass_nms`, `demo/ONNXRuntime/onnx_inference.py`):

- input: the BGR frame (no swap to RGB), 0-255 float32 (not normalised), resized by
  r = min(H/h, W/w) with bilinear interpolation into the top-left corner of an HxW canvas of 114;
- output (1, A, 5 + classes), one row per anchor point of the stride 8, 16, 32 grids, row-major:
  cx = (x + grid_x) * stride, cy likewise, w = exp(w) * stride, h likewise, objectness, class scores;
- score = objectness x class score; boxes divided by r back to the frame; NMS at IoU 0.45 with
  YOLOX's pixel convention (areas (x2 - x1 + 1) * (y2 - y1 + 1)). The demo's default is
  class-agnostic (each anchor keeps its best class, one NMS over all classes); the class-aware
  variant (one NMS per COCO class, an anchor may give a box per class) is `class_agnostic=False`.

Then, beyond the demo: boxes are clipped to the frame and COCO car -> Car, truck and bus -> Truck,
person -> Pedestrian; other COCO classes are dropped (after NMS, as the demo would draw them).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from fastyolo.detections import Detections
from fastyolo.errors import FastYoloError, ModelError
from fastyolo.layout import CLASS_NAMES

STRIDES = (8, 16, 32)
PAD_VALUE = 114
COCO_CLASSES = 80
# COCO (80-class, contiguous ids) -> fastyolo class name.
COCO_TO_CLASS = {0: "Pedestrian", 2: "Car", 5: "Truck", 7: "Truck"}
_COCO_TO_ID = np.full(COCO_CLASSES, -1, np.int32)
for _coco, _name in COCO_TO_CLASS.items():
    _COCO_TO_ID[_coco] = CLASS_NAMES.index(_name)

DEFAULT_CONF = 0.35  # the score the teacher's README measured its recall at
DEFAULT_IOU = 0.45  # YOLOX demo's NMS threshold


def map_coco(coco_ids: np.ndarray) -> np.ndarray:
    """COCO class ids -> fastyolo class ids (indices into CLASS_NAMES); -1 for classes we do not label."""
    return _COCO_TO_ID[np.asarray(coco_ids, np.int64)]


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """YOLOX's preproc: (1, 3, H, W) float32 BGR 0-255 network input and the scale r (frame -> input)."""
    in_h, in_w = size
    h, w = image.shape[:2]
    r = min(in_h / h, in_w / w)
    new_w, new_h = int(w * r), int(h * r)  # int(), not round(): as YOLOX does
    canvas = np.full((in_h, in_w, 3), PAD_VALUE, np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32), r


def unletterbox(boxes: np.ndarray, r: float, frame_size: tuple[int, int]) -> np.ndarray:
    """Boxes in network-input pixels -> frame pixels (divided by r, clipped to the frame (width, height))."""
    w, h = frame_size
    return (np.asarray(boxes, np.float32) / r).clip(0.0, [w, h, w, h]).astype(np.float32)


def anchor_points(size: tuple[int, int], strides: tuple[int, ...] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """(A, 2) grid points (x, y) and (A, 1) strides of the output rows, stride by stride, row-major."""
    grids, expanded = [], []
    for stride in strides:
        ys, xs = np.meshgrid(np.arange(size[0] // stride), np.arange(size[1] // stride), indexing="ij")
        grid = np.stack((xs, ys), axis=-1).reshape(-1, 2)
        grids.append(grid)
        expanded.append(np.full((len(grid), 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def decode(raw: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One image's raw output (A, 5 + C) -> boxes (A, 4) x1, y1, x2, y2 in input pixels, scores (A, C)."""
    raw = np.asarray(raw, np.float32)
    grid, stride = anchor_points(size)
    if len(raw) != len(grid):
        raise ModelError(f"the teacher gives {len(raw)} rows for a {size[1]}x{size[0]} input; the YOLOX layout "
                         f"(strides {', '.join(map(str, STRIDES))}) has {len(grid)}")
    centre = (raw[:, :2] + grid) * stride
    half = np.exp(raw[:, 2:4]) * stride / 2
    boxes = np.concatenate((centre - half, centre + half), axis=1)
    return boxes, raw[:, 4:5] * raw[:, 5:]


def nms(boxes: np.ndarray, scores: np.ndarray, conf: float, iou: float,
        class_agnostic: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOX's multiclass_nms with OpenCV: (indices into boxes, scores, class ids) kept, best first.

    Candidates need score > conf. Boxes are passed to OpenCV as (x, y, w + 1, h + 1) so that its IoU
    is YOLOX's (which counts pixels inclusively); OpenCV also suppresses at IoU > iou, as YOLOX does.
    """
    if class_agnostic:
        cls = scores.argmax(axis=1)
        best = scores[np.arange(len(scores)), cls]
        idx = np.flatnonzero(best > conf)
        cand_scores, cand_cls = best[idx], cls[idx]
    else:
        idx, cand_cls = np.nonzero(scores > conf)  # every (anchor, class) above conf is a candidate
        cand_scores = scores[idx, cand_cls]
    if len(idx) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
    b = boxes[idx].astype(np.float64)
    rects = np.stack((b[:, 0], b[:, 1], b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1), axis=1)
    s = cand_scores.astype(np.float32)
    if class_agnostic:
        keep = cv2.dnn.NMSBoxes(rects, s, conf, iou)
    else:
        keep = cv2.dnn.NMSBoxesBatched(rects, s, cand_cls.astype(np.int32), conf, iou)
    keep = np.asarray(keep, np.int64).reshape(-1)
    keep = keep[np.argsort(-s[keep], kind="stable")]
    return idx[keep], s[keep], cand_cls[keep].astype(np.int64)


def _input_size(shape: list) -> tuple[int, int]:
    """(H, W) from the model's input shape; 416x416 (YOLOX-nano/tiny) where the model leaves it dynamic."""
    h, w = shape[2], shape[3]
    return (h if isinstance(h, int) and h > 0 else 416, w if isinstance(w, int) and w > 0 else 416)


class Teacher:
    """A YOLOX COCO detector on onnxruntime (CPU): `detect(frame)` gives fastyolo Detections."""

    def __init__(self, path: str | os.PathLike, conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU,
                 class_agnostic: bool = True, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"teacher model not found: {self.path} (a YOLOX COCO .onnx, e.g. yolox_nano.onnx)")
        if not 0.0 <= conf < 1.0:
            raise FastYoloError(f"teacher score threshold must be in [0, 1), got {conf}")
        if not 0.0 < iou <= 1.0:
            raise FastYoloError(f"teacher NMS IoU must be in (0, 1], got {iou}")
        self.conf, self.iou, self.class_agnostic = conf, iou, class_agnostic
        options = ort.SessionOptions()
        options.log_severity_level = 3  # our errors say what failed; no onnxruntime warnings on stderr
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several types for unreadable files
            raise ModelError(f"onnxruntime cannot load the teacher {self.path}: {str(exc).splitlines()[0]}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        foreign = (f"{self.path} is not a YOLOX COCO detector (expected one input N x 3 x H x W and one output "
                   f"N x anchors x {5 + COCO_CLASSES}")
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4 or len(outputs[0].shape) != 3:
            raise ModelError(f"{foreign}; it has inputs {[i.shape for i in inputs]}, outputs {[o.shape for o in outputs]})")
        if outputs[0].shape[2] != 5 + COCO_CLASSES:
            raise ModelError(f"{foreign}; its output is {outputs[0].shape})")
        self.input_name = inputs[0].name
        self.input_size = _input_size(inputs[0].shape)
        anchors = outputs[0].shape[1]
        expected = len(anchor_points(self.input_size)[0])
        if isinstance(anchors, int) and anchors != expected:
            raise ModelError(f"{foreign}; its output has {anchors} rows where strides {STRIDES} on "
                             f"{self.input_size[1]}x{self.input_size[0]} give {expected})")

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The network's output for one BGR frame, (A, 85), and the letterbox scale r."""
        blob, r = letterbox(image, self.input_size)
        return self.session.run(None, {self.input_name: blob})[0][0], r

    def detect_coco(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All COCO detections: boxes (N, 4) in frame pixels (clipped), scores (N,), COCO class ids (N,)."""
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise ValueError("the teacher takes an HxWx3 uint8 BGR frame")
        raw, r = self.raw(image)
        boxes, scores = decode(raw, self.input_size)
        keep, kept_scores, coco = nms(boxes, scores, self.conf, self.iou, self.class_agnostic)
        frame_boxes = unletterbox(boxes[keep], r, (image.shape[1], image.shape[0]))
        return frame_boxes, kept_scores, coco

    def detect(self, image: np.ndarray) -> Detections:
        """Car, Truck and Pedestrian boxes in frame pixels, best score first; boxes of no area dropped."""
        boxes, scores, coco = self.detect_coco(image)
        ids = map_coco(coco)
        keep = (ids >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Detections(boxes[keep], scores[keep].astype(np.float32), ids[keep].astype(np.int32))
