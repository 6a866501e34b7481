"""Redraw the README pictures: a tracked frame of the real highway clip, and a KITTI frame.

    python docs/make_pictures.py --model bench/artifacts/overfit.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from fastyolo import Detector
from fastyolo.bench import sample_video
from fastyolo.draw import annotate

DOCS = Path(__file__).resolve().parent
KITTI = DOCS.parents[1] / "shared" / "data" / "kitti_tiny" / "images"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--frame", type=int, default=440, help="clip frame to show (tracked from frame 0) [440]")
    p.add_argument("--conf", type=float, default=0.2)
    p.add_argument("--kitti-frame", default="000049.jpg")
    args = p.parse_args()
    detector = Detector(args.model, conf=args.conf)
    cap = cv2.VideoCapture(str(sample_video()))
    frames = (cap.read()[1] for _ in range(args.frame + 1))
    keep = []
    for i, dets in enumerate(detector.track(_remember(frames, keep), fps=cap.get(cv2.CAP_PROP_FPS))):
        if i == args.frame:
            out = DOCS / "annotated_frame.jpg"
            cv2.imwrite(str(out), annotate(keep[-1], dets), [cv2.IMWRITE_JPEG_QUALITY, 92])
            print(f"wrote {out}: clip frame {i}, {dets}")
    cap.release()
    image = cv2.imread(str(KITTI / args.kitti_frame))
    if image is not None:
        out = DOCS / "annotated_kitti.jpg"
        dets = detector.detect(image)
        cv2.imwrite(str(out), annotate(image, dets), [cv2.IMWRITE_JPEG_QUALITY, 92])
        print(f"wrote {out}: kitti_tiny {args.kitti_frame} (a training frame), {dets}")
    return 0


def _remember(frames, keep: list):
    """Pass frames through, keeping the latest one to draw on."""
    for f in frames:
        keep[:] = [f]
        yield f


if __name__ == "__main__":
    raise SystemExit(main())
