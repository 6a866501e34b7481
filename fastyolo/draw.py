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


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


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
    order = np.argsort(-detections.scores, kind="stable")
    # Labels are placed best score first (it gets the spot above its box; others move inside or
    # below their box when that spot is taken), then everything is drawn lowest score first so the
    # most confident box and label end up on top.
    taken: list[tuple[int, int, int, int]] = []
    placed = {}
    for i in order:
        x1, y1, x2, y2 = (int(round(float(v))) for v in detections.boxes[i])
        cid = int(detections.class_ids[i])
        name = CLASS_NAMES[cid] if cid < len(CLASS_NAMES) else str(cid)
        text = label_text(name, float(detections.scores[i]), None if tracks is None else int(tracks[i]))
        (tw, th), base = cv2.getTextSize(text, FONT, font_scale, font_thick)
        lw, lh = tw + 2 * pad, th + base + 2 * pad
        left = min(max(x1 - thick // 2, 0), max(w - lw, 0))  # never off the right edge
        spots = [y1 - lh, y1, y2]  # above the box, inside its top edge, below it
        spots = [min(max(t, 0), h - lh) for t in spots if 0 <= t <= h - lh] or [min(max(y1, 0), max(h - lh, 0))]
        top = next((t for t in spots if not any(_overlap((left, t, left + lw, t + lh), r) for r in taken)), spots[0])
        taken.append((left, top, left + lw, top + lh))
        placed[i] = ((x1, y1, x2, y2), class_colour(cid), text, (left, top, lw, lh, th))
    for i in order[::-1]:
        (x1, y1, x2, y2), colour, text, (left, top, lw, lh, th) = placed[i]
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thick)  # axis-aligned: crisp without anti-aliasing
        cv2.rectangle(image, (left, top), (left + lw, top + lh), colour, cv2.FILLED)
        cv2.putText(image, text, (left + pad, top + pad + th), FONT, font_scale, _text_colour(colour), font_thick,
                    cv2.LINE_AA)
    return image
