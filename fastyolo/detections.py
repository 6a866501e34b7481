"""The result of detecting one frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

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
            x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
            track = None if self.track_ids is None else int(self.track_ids[i])
            cid = int(self.class_ids[i])
            yield Detection((x1, y1, x2, y2), float(self.scores[i]), cid, CLASS_NAMES[cid], track)

    def __getitem__(self, index) -> Detections:
        """Select detections with a mask, index array or slice."""
        tracks = None if self.track_ids is None else self.track_ids[index]
        return Detections(self.boxes[index], self.scores[index], self.class_ids[index], tracks)

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
