"""Redraw the README pictures with the packaged model (or --model): frames of the highway clip's
held-out segments (frames 297-484, never trained on), tracked from the segment's start, and a KITTI
frame (another country and camera, never trained on).

    python docs/make_pictures.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from fastyolo import Detector
from fastyolo.bench import sample_video
from fastyolo.draw import annotate

DOCS = Path(__file__).resolve().parent
KITTI = DOCS.parents[1] / "shared" / "data" / "kitti_tiny" / "images"
HELDOUT = (297, 485)  # bench/real_model.py: segments 4 and 5 of the clip
SHOW = (330, 372, 430, 470)


def heldout_montage(detector: Detector, out: Path) -> None:
    """A 2x2 montage of SHOW frames, each half size, tracked over the held-out frames."""
    cap = cv2.VideoCapture(str(sample_video()))
    frames = [cap.read()[1] for _ in range(HELDOUT[1])][HELDOUT[0]:]
    cap.release()
    tiles = {}
    for offset, dets in enumerate(detector.track(frames, fps=25.0)):
        index = HELDOUT[0] + offset
        if index in SHOW:
            tile = annotate(frames[offset], dets)
            cv2.putText(tile, f"held-out frame {index}", (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
            tiles[index] = cv2.resize(tile, (tile.shape[1] // 2, tile.shape[0] // 2), interpolation=cv2.INTER_AREA)
            print(f"frame {index}: {dets}")
    rows = [np.hstack([tiles[SHOW[0]], tiles[SHOW[1]]]), np.hstack([tiles[SHOW[2]], tiles[SHOW[3]]])]
    cv2.imwrite(str(out), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {out}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="an .onnx [the packaged model]")
    p.add_argument("--conf", type=float, default=0.3)
    p.add_argument("--kitti-frame", default="000049.jpg")
    args = p.parse_args()
    detector = Detector(args.model, conf=args.conf)
    heldout_montage(detector, DOCS / "heldout_frames.jpg")
    image = cv2.imread(str(KITTI / args.kitti_frame))
    if image is not None:
        out = DOCS / "annotated_kitti.jpg"
        dets = detector.detect(image)
        cv2.imwrite(str(out), annotate(image, dets), [cv2.IMWRITE_JPEG_QUALITY, 92])
        print(f"wrote {out}: kitti_tiny {args.kitti_frame} (never trained on), {dets}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
