"""COCO detectors used as teachers to label footage (`fastyolo label`): YOLOX and PicoDet ONNX layouts.

The layout is read from the ONNX itself (its inputs and outputs); anything else is one ModelError.

YOLOX (one output), following YOLOX's published ONNX demo (Megvii-BaseDetection/YOLOX:
`yolox/data/data_augment.py:preproc`, `yolox/utils/demo_utils.py:demo_postprocess/multiclass_nms`):

- input: the BGR frame (no swap to RGB), 0-255 float32 (not normalised), resized by
  r = min(H/h, W/w) with bilinear interpolation into the top-left corner of an HxW canvas of 114;
- output (1, A, 5 + classes), one row per anchor point of the stride 8, 16, 32 grids, row-major:
  cx = (x + grid_x) * stride, cy likewise, w = exp(w) * stride, h likewise, objectness, class scores;
- score = objectness x class score; boxes divided by r back to the frame.

PicoDet (PaddleDetection's GFL head, eight outputs), following the public demo in
`hpc203/picodet-onnxruntime` (`main.py`) and PaddleDetection's PicoDet config:

- input: the BGR frame resized to HxW without keeping its aspect (bilinear), (pixel - mean) / std per
  channel with BGR-ordered ImageNet statistics;
- outputs: 4 class-score tensors (1, N_l, 80), already through a sigmoid, for strides 8, 16, 32, 64
  (N_l = ceil(H/s) * ceil(W/s), row-major), then 4 box distributions (1, N_l, 4 * (reg_max + 1)): per
  side (left, top, right, bottom) a softmax over reg_max + 1 bins whose expectation times the stride is
  the distance from the anchor centre (x * s + (s - 1) / 2, y * s + (s - 1) / 2);
- score = the class score; boxes scaled back by the frame's width and height ratios.

Both: NMS at IoU 0.45 with YOLOX's pixel convention (areas (x2 - x1 + 1) * (y2 - y1 + 1)), class-agnostic
by default (each anchor keeps its best class, one NMS over all classes, as the demos do) or class-aware
(`class_agnostic=False`: one NMS per COCO class). Then boxes are clipped to the frame and COCO car -> Car,
truck and bus -> Truck, person -> Pedestrian; other COCO classes are dropped (after NMS, as the demos
would draw them).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from fastyolo.detections import Detections
from fastyolo.errors import FastYoloError, ModelError
from fastyolo.layout import CLASS_NAMES

STRIDES = (8, 16, 32)  # YOLOX
PAD_VALUE = 114
COCO_CLASSES = 80
# PicoDet's normalisation, BGR order (the ImageNet mean/std of PaddleDetection's config, times 255).
PICODET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)
PICODET_STD = np.array([57.375, 57.12, 58.395], np.float32)
LAYOUTS = ("yolox", "picodet")
BACKENDS = ("openvino", "onnxruntime")
# COCO (80-class, contiguous ids) -> fastyolo class name.
COCO_TO_CLASS = {0: "Pedestrian", 2: "Car", 5: "Truck", 7: "Truck"}
_COCO_TO_ID = np.full(COCO_CLASSES, -1, np.int32)
for _coco, _name in COCO_TO_CLASS.items():
    _COCO_TO_ID[_coco] = CLASS_NAMES.index(_name)

DEFAULT_CONF = 0.35  # the score the teacher's README measured its recall at
DEFAULT_IOU = 0.45  # YOLOX demo's NMS threshold
DEFAULT_INPUT = 416  # where a model leaves its input size dynamic (YOLOX-nano/tiny, PicoDet-S 416)


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


def picodet_input(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
    """PicoDet's preprocessing: (1, 3, H, W) normalised BGR float32 and the scales (sx, sy) frame -> input."""
    in_h, in_w = size
    h, w = image.shape[:2]
    resized = cv2.resize(image, (in_w, in_h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    blob = (resized - PICODET_MEAN) / PICODET_STD
    return np.ascontiguousarray(blob.transpose(2, 0, 1)[None]), (in_w / w, in_h / h)


def unletterbox(boxes: np.ndarray, r: float | tuple[float, float], frame_size: tuple[int, int]) -> np.ndarray:
    """Boxes in network-input pixels -> frame pixels (divided by r, or by (rx, ry); clipped to (width, height))."""
    w, h = frame_size
    rx, ry = (r, r) if np.isscalar(r) else r
    scale = np.array([rx, ry, rx, ry], np.float32)
    return (np.asarray(boxes, np.float32) / scale).clip(0.0, [w, h, w, h]).astype(np.float32)


def anchor_points(size: tuple[int, int], strides: tuple[int, ...] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX: (A, 2) grid points (x, y) and (A, 1) strides of the output rows, stride by stride, row-major."""
    grids, expanded = [], []
    for stride in strides:
        ys, xs = np.meshgrid(np.arange(size[0] // stride), np.arange(size[1] // stride), indexing="ij")
        grid = np.stack((xs, ys), axis=-1).reshape(-1, 2)
        grids.append(grid)
        expanded.append(np.full((len(grid), 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def decode(raw: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX: one image's raw output (A, 5 + C) -> boxes (A, 4) x1, y1, x2, y2 in input pixels, scores (A, C)."""
    raw = np.asarray(raw, np.float32)
    grid, stride = anchor_points(size)
    if len(raw) != len(grid):
        raise ModelError(f"the teacher gives {len(raw)} rows for a {size[1]}x{size[0]} input; the YOLOX layout "
                         f"(strides {', '.join(map(str, STRIDES))}) has {len(grid)}")
    centre = (raw[:, :2] + grid) * stride
    half = np.exp(raw[:, 2:4]) * stride / 2
    boxes = np.concatenate((centre - half, centre + half), axis=1)
    return boxes, raw[:, 4:5] * raw[:, 5:]


def picodet_strides(levels: int) -> tuple[int, ...]:
    """PicoDet's strides: 8, 16, 32, 64 for its four levels (8 * 2^i)."""
    return tuple(8 * 2**i for i in range(levels))


def picodet_centres(size: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """PicoDet: (A, 2) anchor centres (x * s + (s - 1) / 2, ...) and (A,) strides, level by level, row-major."""
    centres, expanded = [], []
    for s in strides:
        ys, xs = np.meshgrid(np.arange(math.ceil(size[0] / s)), np.arange(math.ceil(size[1] / s)), indexing="ij")
        centres.append(np.stack((xs, ys), axis=-1).reshape(-1, 2) * s + (s - 1) / 2)
        expanded.append(np.full(len(centres[-1]), s))
    return np.concatenate(centres).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def decode_picodet(outputs: list[np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """PicoDet: the eight outputs of one image -> boxes (A, 4) in input pixels, scores (A, C)."""
    levels = len(outputs) // 2
    scores = np.concatenate([np.asarray(o, np.float32).reshape(-1, o.shape[-1]) for o in outputs[:levels]])
    dist = np.concatenate([np.asarray(o, np.float32).reshape(-1, o.shape[-1]) for o in outputs[levels:]])
    centres, strides = picodet_centres(size, picodet_strides(levels))
    if len(scores) != len(centres) or len(dist) != len(centres):
        raise ModelError(f"the teacher gives {len(scores)} anchor rows for a {size[1]}x{size[0]} input; the PicoDet "
                         f"layout (strides {', '.join(map(str, picodet_strides(levels)))}) has {len(centres)}")
    bins = dist.shape[1] // 4
    logits = dist.reshape(-1, 4, bins)
    logits = np.exp(logits - logits.max(axis=2, keepdims=True))  # softmax over the bins, stable
    sides = (logits / logits.sum(axis=2, keepdims=True)) @ np.arange(bins, dtype=np.float32) * strides[:, None]
    boxes = np.concatenate((centres - sides[:, :2], centres + sides[:, 2:]), axis=1)
    return boxes, scores


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


def _dims(value_info) -> list:
    """An ONNX tensor's shape: ints where static, the dimension's name (or None) where dynamic."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def _static(dim, default: int) -> int:
    return dim if isinstance(dim, int) and dim > 0 else default


def read_layout(model) -> tuple[str, str, tuple[int, int]]:
    """(layout, input name, (H, W)) of an onnx ModelProto, or a ModelError that names what it has.

    YOLOX: one input N x 3 x H x W, one output N x anchors x 85. PicoDet: one input, eight outputs, the
    first four N x anchors x 80 (class scores), the last four N x anchors x 4k (box distributions).
    """
    initializers = {i.name for i in model.graph.initializer}
    inputs = [(i.name, _dims(i)) for i in model.graph.input if i.name not in initializers]
    outputs = [_dims(o) for o in model.graph.output]
    has = f"it has inputs {[s for _, s in inputs]}, outputs {outputs}"
    expected = ("expected YOLOX (one input N x 3 x H x W, one output N x anchors x 85) or PicoDet (PaddleDetection "
                "GFL head: eight outputs, four N x anchors x 80 class scores then four N x anchors x 32 box "
                "distributions)")
    if len(inputs) != 1 or len(inputs[0][1]) != 4 or inputs[0][1][1] not in (3, None) or \
            any(len(o) != 3 for o in outputs):
        raise ModelError(f"not a COCO teacher in a layout fastyolo reads: {expected}; {has}")
    name, shape = inputs[0]
    size = (_static(shape[2], DEFAULT_INPUT), _static(shape[3], DEFAULT_INPUT))
    if len(outputs) == 1 and outputs[0][2] == 5 + COCO_CLASSES:
        anchors = outputs[0][1]
        rows = len(anchor_points(size)[0])
        if isinstance(anchors, int) and anchors > 0 and anchors != rows:
            raise ModelError(f"not a YOLOX COCO teacher: its output has {anchors} rows where strides "
                             f"{STRIDES} on {size[1]}x{size[0]} give {rows}; {has}")
        return "yolox", name, size
    if len(outputs) == 8 and all(o[2] == COCO_CLASSES for o in outputs[:4]) and \
            all(isinstance(o[2], int) and o[2] % 4 == 0 and o[2] > 4 for o in outputs[4:]):
        for s, o, d in zip(picodet_strides(4), outputs[:4], outputs[4:], strict=True):
            rows = math.ceil(size[0] / s) * math.ceil(size[1] / s)
            if any(isinstance(x, int) and x > 0 and x != rows for x in (o[1], d[1])):
                raise ModelError(f"not a PicoDet COCO teacher: stride {s} on {size[1]}x{size[0]} has {rows} anchors, "
                                 f"its outputs {o[1]} and {d[1]}; {has}")
        return "picodet", name, size
    raise ModelError(f"not a COCO teacher in a layout fastyolo reads: {expected}; {has}")


class Teacher:
    """A COCO detector (YOLOX or PicoDet ONNX, recognised from the file) on the CPU: `detect(frame)`."""

    def __init__(self, path: str | os.PathLike, conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU,
                 class_agnostic: bool = True, threads: int | None = None, backend: str = "openvino"):
        import onnx

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"teacher model not found: {self.path} (a COCO YOLOX or PicoDet .onnx, e.g. "
                             "yolox_nano.onnx, picodet_s_416_coco.onnx)")
        if not 0.0 <= conf < 1.0:
            raise FastYoloError(f"teacher score threshold must be in [0, 1), got {conf}")
        if not 0.0 < iou <= 1.0:
            raise FastYoloError(f"teacher NMS IoU must be in (0, 1], got {iou}")
        if backend not in BACKENDS:
            raise FastYoloError(f"teacher backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.conf, self.iou, self.class_agnostic, self.backend = conf, iou, class_agnostic, backend
        try:
            model = onnx.load(str(self.path))
        except Exception as exc:  # protobuf raises several types for files that are not ONNX
            raise ModelError(f"cannot load the teacher {self.path}: not an ONNX model ({str(exc).splitlines()[0]})") \
                from None
        try:
            self.layout, self.input_name, self.input_size = read_layout(model)
        except ModelError as exc:
            raise ModelError(f"{self.path} is {exc}") from None
        self.name = self.path.stem
        self._run = self._openvino(model, threads) if backend == "openvino" else self._onnxruntime(model, threads)

    def _onnxruntime(self, model, threads: int | None):
        import onnxruntime as ort

        # Weights listed as graph inputs (PaddleDetection's export) keep onnxruntime from folding
        # constants: the copy run here lists only the real input.
        keep = [i for i in model.graph.input if i.name == self.input_name]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # our errors say what failed; no onnxruntime warnings on stderr
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several types for unreadable files
            raise ModelError(f"onnxruntime cannot load the teacher {self.path}: {str(exc).splitlines()[0]}") from None
        names = [o.name for o in session.get_outputs()]
        return lambda blob: session.run(names, {self.input_name: blob})

    def _openvino(self, model, threads: int | None):
        import openvino as ov

        from fastyolo.backends.openvino import cpu_pinning

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                  "ENABLE_CPU_PINNING": cpu_pinning(threads)}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            read = core.read_model(str(self.path))
            read.reshape({self.input_name: [1, 3, *self.input_size]})
            compiled = core.compile_model(read, "CPU", config)
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot load the teacher {self.path}: {str(exc).splitlines()[0]}") from None
        request = compiled.create_infer_request()
        outputs = [compiled.output(o.name) for o in model.graph.output]  # in the ONNX's order

        def run(blob: np.ndarray) -> list[np.ndarray]:
            result = request.infer({0: blob})
            return [np.array(result[o]) for o in outputs]

        return run

    def candidates(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every anchor's box (A, 4) in frame pixels (not clipped) and COCO scores (A, 80), before NMS."""
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise ValueError("the teacher takes an HxWx3 uint8 BGR frame")
        if self.layout == "yolox":
            blob, r = letterbox(image, self.input_size)
            boxes, scores = decode(self._run(blob)[0][0], self.input_size)
            scale = (r, r)
        else:
            blob, scale = picodet_input(image, self.input_size)
            boxes, scores = decode_picodet([o[0] for o in self._run(blob)], self.input_size)
        return boxes / np.array([*scale, *scale], np.float32), scores

    def detect_coco(self, image: np.ndarray, conf: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All COCO detections above `conf` (default: the teacher's): boxes (N, 4) in frame pixels (clipped),
        scores (N,), COCO class ids (N,), best first."""
        boxes, scores = self.candidates(image)
        keep, kept_scores, coco = nms(boxes, scores, self.conf if conf is None else conf, self.iou,
                                      self.class_agnostic)
        h, w = image.shape[:2]
        return boxes[keep].clip(0.0, [w, h, w, h]).astype(np.float32), kept_scores, coco

    def detect(self, image: np.ndarray, conf: float | None = None) -> Detections:
        """Car, Truck and Pedestrian boxes in frame pixels, best score first; boxes of no area dropped."""
        boxes, scores, coco = self.detect_coco(image, conf)
        ids = map_coco(coco)
        keep = (ids >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Detections(boxes[keep], scores[keep].astype(np.float32), ids[keep].astype(np.int32))

    def describe(self) -> dict:
        """What sources.json records about this teacher."""
        return {"path": str(self.path), "layout": self.layout, "input": list(self.input_size), "conf": self.conf,
                "iou": self.iou, "nms": "class-agnostic" if self.class_agnostic else "class-aware",
                "backend": self.backend}
