"""The result of detecting one frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import overload

import numpy as np

from fastyolo.layout import CLASS_NAMES


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    score: float
    class_id: int
    label: str
    track_id: int | None = None


@dataclass
class Detections:
    """Boxes found in one frame, best score first.

    boxes: (N, 4) float32 x1, y1, x2, y2 in the frame's pixels; scores: (N,) float32;
    class_ids: (N,) int32 indices into `fastyolo.CLASS_NAMES`; track_ids: (N,) int64 when tracked.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        """Arrays of one length and the documented shapes; class ids that name a class."""
        self.boxes = np.asarray(self.boxes, np.float32)
        self.scores = np.asarray(self.scores, np.float32)
        self.class_ids = np.asarray(self.class_ids, np.int32)
        if self.boxes.size == 0 and self.boxes.ndim != 2:
            self.boxes = self.boxes.reshape(0, 4)
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.scores.ndim != 1 or self.class_ids.shape != (n,):
            raise ValueError(f"Detections needs boxes (N, 4), scores (N,) and class_ids (N,), got "
                             f"{self.boxes.shape}, {self.scores.shape}, {self.class_ids.shape}")
        if n and (self.class_ids.min() < 0 or self.class_ids.max() >= len(CLASS_NAMES)):
            raise ValueError(f"class_ids must index CLASS_NAMES (0..{len(CLASS_NAMES) - 1}), got {self.class_ids.tolist()}")
        if self.track_ids is not None:
            self.track_ids = np.asarray(self.track_ids, np.int64)
            if self.track_ids.shape != (n,):
                raise ValueError(f"track_ids must be (N,) = ({n},), got {self.track_ids.shape}")

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    @property
    def labels(self) -> list[str]:
        return [CLASS_NAMES[i] for i in self.class_ids]

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Detection]:
        for i in range(len(self)):
            yield self._one(i)

    @overload
    def __getitem__(self, index: int) -> Detection: ...

    @overload
    def __getitem__(self, index: slice | np.ndarray | list) -> Detections: ...

    def __getitem__(self, index):
        """An integer gives one `Detection` (as iterating does, negative counts from the end);
        a slice, boolean mask or index array gives the selected `Detections`."""
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"detection index {index} out of range for {n} detection(s)")
            return self._one(int(index) % n)
        tracks = None if self.track_ids is None else self.track_ids[index]
        return Detections(self.boxes[index], self.scores[index], self.class_ids[index], tracks)

    def _one(self, i: int) -> Detection:
        x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
        track = None if self.track_ids is None else int(self.track_ids[i])
        cid = int(self.class_ids[i])
        return Detection((x1, y1, x2, y2), float(self.scores[i]), cid, CLASS_NAMES[cid], track)

    def to_supervision(self):
        """As a `supervision.Detections` (xyxy, confidence, class_id, tracker_id; data["class_name"])."""
        import supervision as sv

        return sv.Detections(
            xyxy=self.boxes.astype(np.float32).reshape(-1, 4), confidence=self.scores.astype(np.float32),
            class_id=self.class_ids.astype(np.int64),
            tracker_id=None if self.track_ids is None else self.track_ids.astype(np.int64),
            data={"class_name": np.array(self.labels, dtype=str)},
        )

    @classmethod
    def from_supervision(cls, detections) -> Detections:
        """From a `supervision.Detections` whose class_id indexes `fastyolo.CLASS_NAMES` (confidence 0 if absent)."""
        n = len(detections)
        scores = np.zeros(n, np.float32) if detections.confidence is None else detections.confidence
        if detections.class_id is None:
            raise ValueError("supervision Detections without class_id: fastyolo needs a class per box")
        tracks = None if detections.tracker_id is None else np.asarray(detections.tracker_id, np.int64)
        return cls(np.asarray(detections.xyxy, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                   np.asarray(detections.class_id, np.int32), tracks)

    def to_dicts(self) -> list[dict]:
        """JSON-ready: [{"box": [x1, y1, x2, y2], "score": s, "label": "Car", ...}]."""
        out = []
        for d in self:
            row = {"box": [round(v, 2) for v in d.box], "score": round(d.score, 4), "label": d.label}
            if d.track_id is not None:
                row["track_id"] = d.track_id
            out.append(row)
        return out

    def __repr__(self) -> str:
        counts = {name: int((self.class_ids == i).sum()) for i, name in enumerate(CLASS_NAMES)}
        found = ", ".join(f"{n} {name}" for name, n in counts.items() if n) or "nothing"
        return f"Detections({len(self)}: {found})"
