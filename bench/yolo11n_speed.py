"""The packaged model end to end against Ultralytics yolo11n at 224 on OpenVINO, timed the same way in one run
(issue 20's speed target: >= 2x). bench/RESULTS.md, "Against yolo11n".

    python -m venv ~/venv-yolo && ~/venv-yolo/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics openvino
    python bench/yolo11n_speed.py --yolo-python ~/venv-yolo/bin/python [--rounds 3] [--frames 300]
        [--model NAME=ONNX ...] [--json F]

Ultralytics lives in a venv of its own (its torchvision breaks beside our CPU torch). yolo11n is built from
`yolo11n.yaml` (no weights: its speed does not depend on them) and exported once with `format="openvino",
imgsz=224`. Each round times, one after another: `fastyolo bench CLIP --mode latency --threads 2` for the
packaged fp32 and int8 models, and yolo11n's `predict()` on each frame of the bundled clip (decoded in the same
loop, as a user's script does; 20 frames of warm-up first). Medians of the rounds; the ratios are ours / yolo11n.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fastyolo.fileio import sample_video, write_text

YOLO_EXPORT = """
import sys
from ultralytics import YOLO
print(YOLO("yolo11n.yaml").export(format="openvino", imgsz=224, project=sys.argv[1]))
"""

YOLO_TIME = """
import json, sys, time
import cv2
from ultralytics import YOLO
model = YOLO(sys.argv[1], task="detect")
capture = cv2.VideoCapture(sys.argv[2])
frames, warm = int(sys.argv[3]), 20
done, started = 0, None
while done < frames + warm:
    ok, frame = capture.read()
    if not ok:  # the clip loops, as fastyolo bench's does
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        continue
    model.predict(frame, imgsz=224, verbose=False)
    done += 1
    if done == warm:
        started = time.perf_counter()
print(json.dumps({"fps": frames / (time.perf_counter() - started)}))
"""


def _last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def ours(precision: str, frames: int, folder: Path, model: str | None = None) -> float:
    out = folder / "ours.json"
    chosen = ["--model", model] if model else []
    subprocess.run([sys.executable, "-m", "fastyolo.cli", "bench", str(sample_video()), "--mode", "latency",
                    "--threads", "2", "--precision", precision, "--frames", str(frames), "--json", str(out), *chosen],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return float(json.loads(out.read_text())["fps"])


def yolo(python: str, model: str, frames: int) -> float:
    done = subprocess.run([python, "-c", YOLO_TIME, model, str(sample_video()), str(frames)], check=True,
                          capture_output=True, text=True)
    return float(_last_json(done.stdout)["fps"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--yolo-python", required=True, help="python of the venv that has ultralytics and openvino")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--model", action="append", default=[], metavar="NAME=ONNX",
                   help="also time this model of ours (an int8 file when its name ends in .int8.onnx); repeatable")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    extra = dict(item.split("=", 1) for item in args.model)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exported = subprocess.run([args.yolo_python, "-c", YOLO_EXPORT, str(tmp / "yolo")], check=True,
                                  capture_output=True, text=True, cwd=tmp).stdout.strip().splitlines()[-1]
        exported = str(tmp / exported)  # the path it prints is relative to its working folder
        rows: dict[str, list[float]] = {"packaged fp32": [], "packaged int8": [], "yolo11n fp32 (OpenVINO)": []}
        for _ in range(args.rounds):  # alternating: a noisy host slows every row alike
            rows["packaged fp32"].append(ours("fp32", args.frames, tmp))
            rows["packaged int8"].append(ours("int8", args.frames, tmp))
            for name, model in extra.items():
                precision = "int8" if model.endswith(".int8.onnx") else "fp32"
                rows.setdefault(name, []).append(ours(precision, args.frames, tmp, model))
            rows["yolo11n fp32 (OpenVINO)"].append(yolo(args.yolo_python, exported, args.frames))
    medians = {name: statistics.median(fps) for name, fps in rows.items()}
    base = medians["yolo11n fp32 (OpenVINO)"]
    for name, fps in rows.items():
        print(f"{name:30s} {medians[name]:7.1f} FPS  ({medians[name] / base:.2f}x yolo11n; rounds "
              f"{', '.join(f'{x:.1f}' for x in fps)})")
    if args.json:
        write_text(args.json, json.dumps({"frames": args.frames, "rounds": {k: [round(x, 2) for x in v]
                                          for k, v in rows.items()},
                                          "median_fps": {k: round(v, 2) for k, v in medians.items()},
                                          "over_yolo11n": {k: round(v / base, 3) for k, v in medians.items()}},
                                         indent=1) + "\n")


if __name__ == "__main__":
    main()
