"""The packaged model end to end against Ultralytics yolo11n at 224 on OpenVINO, timed the same way in one run
(issue 20's speed target: >= 2x). bench/RESULTS.md, "Against yolo11n".

    python -m venv ~/venv-yolo && ~/venv-yolo/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics openvino
    python bench/yolo11n_speed.py --yolo-python ~/venv-yolo/bin/python [--rounds 3] [--frames 300]
        [--model NAME=ONNX ...] [--json F]

Ultralytics lives in a venv of its own (its torchvision breaks beside our CPU torch). yolo11n is built from
`yolo11n.yaml` (no weights: its speed does not depend on them) and exported once with `format="openvino",
imgsz=224`. Each round times, one after another: `fastyolo bench CLIP --mode latency --threads 2` for the
packaged model in fp32, bf16 and int8, and yolo11n's `predict()` on each frame of the bundled clip (decoded in the same
loop, as a user's script does; 20 frames of warm-up first). Medians of the rounds; the ratios are ours / yolo11n.
Each row says the precision that ran: Ultralytics leaves OpenVINO's default, which is bf16 on CPUs with AVX512_BF16
or AMX and fp32 elsewhere; ours asks for bf16 and gets fp32 where the CPU has none.
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
if sys.argv[4] == "fp32":  # Ultralytics has no precision option: ask OpenVINO for fp32 where it compiles
    import openvino as ov
    _compile = ov.Core.compile_model
    def compile_fp32(self, model, device_name=None, config=None):
        return _compile(self, model, device_name, {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"})
    ov.Core.compile_model = compile_fp32
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
fps = frames / (time.perf_counter() - started)
# Ultralytics compiles with OpenVINO's default precision: bf16 on CPUs that have it (AVX512_BF16, AMX), fp32 elsewhere
backend = getattr(model.predictor.model, "backend", None)
compiled = getattr(backend, "ov_compiled_model", None)
ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() if compiled is not None else "unknown"
print(json.dumps({"fps": fps, "precision": {"f32": "fp32", "bf16": "bf16"}.get(ran, ran)}))
"""


PRECISIONS = ("fp32", "bf16", "int8")  # ours, each as `fastyolo bench --precision` names it
YOLO_ROW = "yolo11n (OpenVINO)"  # as Ultralytics runs it: the ratios are against this row
YOLO_FP32_ROW = "yolo11n forced fp32"


def _last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def ours(precision: str, frames: int, folder: Path, model: str | None = None) -> tuple[float, str]:
    """(FPS, the precision that ran: bf16 falls back to fp32 where the CPU has no bf16)."""
    out = folder / "ours.json"
    chosen = ["--model", model] if model else []
    subprocess.run([sys.executable, "-m", "fastyolo.cli", "bench", str(sample_video()), "--mode", "latency",
                    "--threads", "2", "--precision", precision, "--frames", str(frames), "--json", str(out), *chosen],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = json.loads(out.read_text())
    return float(report["fps"]), report["precision"]


def yolo(python: str, model: str, frames: int, precision: str = "default") -> tuple[float, str]:
    """yolo11n's FPS and the precision it ran; precision "default" (what Ultralytics does) or "fp32"."""
    done = subprocess.run([python, "-c", YOLO_TIME, model, str(sample_video()), str(frames), precision], check=True,
                          capture_output=True, text=True)
    report = _last_json(done.stdout)
    return float(report["fps"]), report["precision"]


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
        rows: dict[str, list[float]] = {}
        ran: dict[str, str] = {}  # row -> the precision that ran

        def add(name: str, timed: tuple[float, str]) -> None:
            rows.setdefault(name, []).append(timed[0])
            ran[name] = timed[1]

        for _ in range(args.rounds):  # alternating: a noisy host slows every row alike
            for precision in PRECISIONS:
                add(f"packaged {precision}", ours(precision, args.frames, tmp))
            for name, model in extra.items():
                precision = "int8" if model.endswith(".int8.onnx") else "fp32"
                add(name, ours(precision, args.frames, tmp, model))
            add(YOLO_ROW, yolo(args.yolo_python, exported, args.frames))
            if ran[YOLO_ROW] != "fp32":  # Ultralytics' default is bf16 on this CPU: time its fp32 too
                add(YOLO_FP32_ROW, yolo(args.yolo_python, exported, args.frames, "fp32"))
    medians = {name: statistics.median(fps) for name, fps in rows.items()}
    base = medians[YOLO_ROW]
    for name, fps in rows.items():
        print(f"{name:24s} ran {ran[name]:4s} {medians[name]:7.1f} FPS  ({medians[name] / base:.2f}x yolo11n; rounds "
              f"{', '.join(f'{x:.1f}' for x in fps)})")
    if args.json:
        write_text(args.json, json.dumps({"frames": args.frames, "precision_ran": ran,
                                          "rounds": {k: [round(x, 2) for x in v] for k, v in rows.items()},
                                          "median_fps": {k: round(v, 2) for k, v in medians.items()},
                                          "over_yolo11n": {k: round(v / base, 3) for k, v in medians.items()}},
                                         indent=1) + "\n")


if __name__ == "__main__":
    main()
