"""Boxes and labels drawn on a frame: one colour per class, a filled label with class, score and track id."""

from __future__ import annotations

import cv2
import numpy as np

from fastyolo.detections import Detections
from fastyolo.layout import CLASS_NAMES

# BGR, chosen to stand out on grey road, green verges and blue sky, and from each other.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 165, 255),  # Car: orange
    (255, 80, 200),  # Truck: violet
    (80, 255, 80),  # Pedestrian: green
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 0),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colour(class_id: int) -> tuple[int, int, int]:
    return PALETTE[class_id % len(PALETTE)]


def _text_colour(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def label_text(label: str, score: float, track_id: int | None) -> str:
    return (f"#{track_id} " if track_id is not None else "") + f"{label} {score:.2f}"


def annotate(frame: np.ndarray, detections: Detections, *, copy: bool = True) -> np.ndarray:
    """`frame` (BGR) with every detection drawn; sizes scale with the frame so labels stay readable."""
    image = frame.copy() if copy else frame
    h, w = image.shape[:2]
    scale = max(min(h, w) / 720.0, 0.35)  # 0.75 at 540p, 1.0 at 720p
    thick = max(1, round(2 * scale + 0.5))
    font_scale = 0.6 * scale + 0.1
    font_thick = max(1, round(1.5 * scale))
    pad = max(2, round(4 * scale))
    tracks = detections.track_ids
    # Lowest score first, so the most confident box and label end up on top.
    for i in np.argsort(detections.scores, kind="stable"):
        x1, y1, x2, y2 = (int(round(float(v))) for v in detections.boxes[i])
        cid = int(detections.class_ids[i])
        colour = class_colour(cid)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thick)  # axis-aligned: crisp without anti-aliasing
        name = CLASS_NAMES[cid] if cid < len(CLASS_NAMES) else str(cid)
        text = label_text(name, float(detections.scores[i]), None if tracks is None else int(tracks[i]))
        (tw, th), base = cv2.getTextSize(text, FONT, font_scale, font_thick)
        box_h = th + base + 2 * pad
        # Above the box when there is room, else just inside its top edge; never off the right edge.
        top = y1 - box_h if y1 - box_h >= 0 else min(y1, h - box_h)
        left = min(max(x1 - thick // 2, 0), max(w - tw - 2 * pad, 0))
        cv2.rectangle(image, (left, top), (left + tw + 2 * pad, top + box_h), colour, cv2.FILLED)
        cv2.putText(image, text, (left + pad, top + pad + th), FONT, font_scale, _text_colour(colour), font_thick,
                    cv2.LINE_AA)
    return image
