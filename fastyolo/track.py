"""Tracking: ByteTrack (supervision) gives each object an id; a Kalman filter per id smooths its box.

Association is ByteTrack's, not ours: it first matches confident boxes to the tracks' predicted
positions, then lets low-score boxes (0.1 < score < conf) keep existing tracks alive, so a car
whose score dips for a few frames keeps its id. That is why tracking asks the detector for boxes
down to score 0.1; such low boxes only keep tracks alive: what is reported scores at least `conf`,
as without tracking.

Smoothing (per track id, on centre x, y, width and height):

- "kalman" (default): a constant-velocity Kalman filter (OpenCV's). Noise scales with the box
  size, so near and far cars are smoothed alike. It removes most frame-to-frame jitter and has no
  lag while an object moves at a steady speed (pans, overtakes); it lags only when the motion
  changes, by about a/beta px for an acceleration of a px/frame^2 (beta is the steady-state velocity
  gain, about 0.1 here: a few frames to catch up after a sudden turn or stop).
- "ema": exponential moving average of the box; as smooth, but it trails a moving object by
  (1 - alpha) / alpha frames of its motion, i.e. always lags during steady motion.
- "none": ByteTrack's ids on the raw boxes.

bench/jitter.py measures the jitter and the lag (error against known paths) of each.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from fastyolo.detections import Detections
from fastyolo.errors import MissingDependencyError
from fastyolo.preprocess import Resized, check_frame

SMOOTHERS = ("kalman", "ema", "none")
SECOND_CONF = 0.1  # ByteTrack ignores boxes at or below this score; lower ones only cost time
# Kalman noise, as fractions of the box size sqrt(w h): measurement jitter std, and the std of
# the per-frame change of velocity (the smaller ACCEL / MEASUREMENT, the smoother and the more lag).
MEASUREMENT = 0.05
ACCEL = 0.006
INITIAL_SPEED = 0.1  # std of a new track's unknown velocity, box sizes per frame
EMA_ALPHA = 0.35


class KalmanBox:
    """Constant-velocity Kalman filter of one box: state (cx, cy, w, h) and their velocities per frame."""

    def __init__(self, box: np.ndarray):
        self.kf = cv2.KalmanFilter(8, 4, 0, cv2.CV_64F)
        self.kf.transitionMatrix = np.eye(8) + np.eye(8, k=4)  # x += v each frame
        self.kf.measurementMatrix = np.eye(4, 8)
        z = _to_cxcywh(box)
        s = _size(z)
        self.kf.statePost = np.concatenate([z, np.zeros(4)])[:, None]
        self.kf.errorCovPost = np.diag(np.r_[np.full(4, (MEASUREMENT * s) ** 2), np.full(4, (INITIAL_SPEED * s) ** 2)])

    def predict(self) -> None:
        s = _size(self.kf.statePost[:4, 0])
        # Discrete white-noise acceleration: a random change of velocity q per frame moves the
        # position by q/2 over the frame.
        q = (ACCEL * s) ** 2
        block = q * np.array([[0.25, 0.5], [0.5, 1.0]])
        self.kf.processNoiseCov = np.kron(block, np.eye(4))
        self.kf.predict()

    def update(self, box: np.ndarray, gap: int = 1) -> np.ndarray:
        """Advance `gap` frames (more than 1 after missed frames), correct with `box`, return the smoothed box."""
        for _ in range(max(gap, 1)):
            self.predict()
        z = _to_cxcywh(box)
        self.kf.measurementNoiseCov = np.eye(4) * (MEASUREMENT * _size(z)) ** 2
        state = self.kf.correct(z[:, None])[:4, 0]
        state[2:] = np.maximum(state[2:], 1.0)
        return _to_xyxy(state)


class EmaBox:
    """Exponential moving average of one box's corners."""

    def __init__(self, box: np.ndarray, alpha: float = EMA_ALPHA):
        self.alpha, self.box = alpha, box.astype(np.float64)

    def update(self, box: np.ndarray, gap: int = 1) -> np.ndarray:
        self.box = self.alpha * box + (1.0 - self.alpha) * self.box
        return self.box.copy()


def _to_cxcywh(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1.0), max(y2 - y1, 1.0)])


def _to_xyxy(s: np.ndarray) -> np.ndarray:
    return np.array([s[0] - s[2] / 2, s[1] - s[3] / 2, s[0] + s[2] / 2, s[1] + s[3] / 2])


def _size(cxcywh: np.ndarray) -> float:
    return float(np.sqrt(max(cxcywh[2], 1.0) * max(cxcywh[3], 1.0)))


def _byte_track(conf: float, fps: float, lost_seconds: float):
    try:
        import supervision as sv
    except ImportError:
        raise MissingDependencyError("tracking needs supervision: pip install 'supervision>=0.30,<0.31'") from None
    if not hasattr(sv, "ByteTrack"):
        raise MissingDependencyError(
            f"supervision {sv.__version__} has no ByteTrack (removed in 0.31): pip install 'supervision>=0.30,<0.31'"
        )
    with warnings.catch_warnings():
        # Deprecated in supervision in favour of the `trackers` package, which requires opencv-python
        # and would clobber opencv-python-headless's cv2; the 0.30 line is pinned in pyproject.toml.
        warnings.simplefilter("ignore", FutureWarning)
        # lost_track_buffer counts frames at 30 FPS; ByteTrack rescales it by frame_rate / 30.
        tracker = sv.ByteTrack(track_activation_threshold=conf, lost_track_buffer=max(1, round(30 * lost_seconds)),
                               frame_rate=fps)
    # A box the plain detector would show (score >= conf) may start a track; ByteTrack's default
    # demands conf + 0.1, which hides new objects for longer and drops weak models' cars entirely.
    tracker.det_thresh = conf
    return sv, tracker


class Tracker:
    """Ids across frames (ByteTrack) and smoothed boxes (per-id Kalman filter), one frame at a time.

    >>> tracker = Tracker(conf=0.25, fps=30)
    >>> for frame in frames:
    ...     tracked = tracker.update(detect_for_tracking(detector, frame), size=(w, h))
    """

    def __init__(self, *, conf: float = 0.25, fps: float = 30.0, smooth: str = "kalman", lost_seconds: float = 1.0):
        if smooth not in SMOOTHERS:
            raise ValueError(f"smooth must be one of {', '.join(SMOOTHERS)}, not {smooth!r}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.sv, self.byte_track = _byte_track(conf, fps, lost_seconds)
        self.conf, self.smooth = conf, smooth
        self.forget_after = max(1, round(fps * lost_seconds)) + 1
        self.frame = -1
        self.filters: dict[int, KalmanBox | EmaBox] = {}
        self.last_seen: dict[int, int] = {}
        self.votes: dict[int, np.ndarray] = {}

    def update(self, detections: Detections, size: tuple[int, int] | None = None) -> Detections:
        """This frame's detections -> those that belong to a track, with `track_ids` and smoothed boxes.

        `size` (width, height) clips the smoothed boxes to the frame.
        """
        self.frame += 1
        sv_in = self.sv.Detections(
            xyxy=detections.boxes.astype(np.float32).reshape(-1, 4),
            confidence=detections.scores.astype(np.float32),
            class_id=detections.class_ids.astype(np.int64),
        )
        out = self.byte_track.update_with_detections(sv_in)
        boxes = np.asarray(out.xyxy, np.float64).reshape(-1, 4)
        ids = np.asarray(out.tracker_id, np.int64).reshape(-1)
        scores = np.asarray(out.confidence if out.confidence is not None else np.zeros(len(ids)), np.float32)
        classes = np.asarray(out.class_id if out.class_id is not None else np.zeros(len(ids)), np.int32)
        if self.smooth != "none":
            boxes = boxes.copy()
            for i, tid in enumerate(ids.tolist()):
                boxes[i] = self._smooth_box(tid, boxes[i])
                classes[i] = self._vote(tid, int(classes[i]), float(scores[i]))
            if size is not None:
                np.clip(boxes, 0, [size[0], size[1], size[0], size[1]], out=boxes)
        self._forget_old()
        shown = scores >= self.conf  # low boxes kept their tracks alive (and smoothed them) above; not reported
        boxes, scores, classes, ids = boxes[shown], scores[shown], classes[shown], ids[shown]
        order = np.argsort(-scores, kind="stable")
        return Detections(boxes[order].astype(np.float32), scores[order], classes[order].astype(np.int32), ids[order])

    def _smooth_box(self, tid: int, box: np.ndarray) -> np.ndarray:
        filt = self.filters.get(tid)
        if filt is None:
            self.filters[tid] = KalmanBox(box) if self.smooth == "kalman" else EmaBox(box)
            self.last_seen[tid] = self.frame
            return box
        gap = self.frame - self.last_seen[tid]
        self.last_seen[tid] = self.frame
        return filt.update(box, gap)

    def _vote(self, tid: int, class_id: int, score: float) -> int:
        """The track's class: the one with the largest summed score so far, so labels do not flicker."""
        votes = self.votes.get(tid)
        if votes is None or class_id >= len(votes):
            grown = np.zeros(max(class_id + 1, 0 if votes is None else len(votes)))
            if votes is not None:
                grown[: len(votes)] = votes
            votes = self.votes[tid] = grown
        votes[class_id] += max(score, 1e-6)
        return int(np.argmax(votes))

    def _forget_old(self) -> None:
        for tid in [t for t, f in self.last_seen.items() if self.frame - f > self.forget_after]:
            del self.last_seen[tid], self.filters[tid]
            self.votes.pop(tid, None)


def detect_for_tracking(detector, frame: np.ndarray | Resized) -> Detections:
    """`detector.detect(frame)` but down to score 0.1, for ByteTrack's second association."""
    frame = frame if isinstance(frame, Resized) else check_frame(frame)
    return detector.detect_batch([frame], conf=min(detector.conf, SECOND_CONF))[0]


def track_frames(detector, frames: Iterable[np.ndarray], *, fps: float = 30.0, smooth: str = "kalman",
                 lost_seconds: float = 1.0) -> Iterator[Detections]:
    """Detect, associate and smooth each frame in turn; yields one `Detections` (with `track_ids`) per frame."""
    tracker = Tracker(conf=detector.conf, fps=fps, smooth=smooth, lost_seconds=lost_seconds)
    for frame in frames:
        detections = detect_for_tracking(detector, frame)
        yield tracker.update(detections, size=(frame.shape[1], frame.shape[0]))
