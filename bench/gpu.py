"""GPU benchmark: fp16 and int8 TensorRT engines from one model, parity with the CPU fp32 path, FPS and stages.

    python bench/gpu.py CHECKPOINT.pt|MODEL.onnx [--images DIR] [--video CLIP] [--frames 300] [--batch 8]

1. exports the fp32 ONNX (from a checkpoint; needs torch) or takes the given fp32 ONNX, converts
   it to fp16 (fastyolo.fp16) and int8 Q/DQ (fastyolo.quantize, calibrated on --images);
2. builds a TensorRT engine from each (fastyolo build-engine);
3. parity: detections of each engine on the real frames (--images, default ../shared/data/
   kitti_tiny/images) against the CPU fp32 path's, scored as mAP@0.5 with the CPU detections as
   ground truth; pass marks fp16 >= 0.98, int8 >= 0.95;
4. speed on the video (default: the bundled real highway clip): FPS end to end, and per-stage
   latency from CUDA events (H2D + normalise, infer, decode + NMS, D2H) plus the host wall time
   of each pipeline stage.

Needs an NVIDIA GPU with TensorRT ('fastyolo[gpu]'); without one it stops with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fastyolo.precisions import targets

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "kitti_tiny" / "images"
THRESHOLDS = {p: target for p, target in targets().items() if p in ("fp16", "int8")}  # fastyolo.precisions


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="training checkpoint (.pt) or fp32 ONNX")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="real frames for parity and int8 calibration")
    p.add_argument("--video", type=Path, help="video to time (default: the bundled highway clip)")
    p.add_argument("--frames", type=int, default=300, help="timed frames [300]")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=8, help="engines' largest batch [8]")
    p.add_argument("--workspace", type=float, default=2.0, help="builder workspace, GB [2]")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.45)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "artifacts" / "gpu")
    return p.parse_args()


def fp32_onnx(model: Path, out: Path) -> Path:
    from fastyolo.errors import MissingDependencyError
    from fastyolo.model_file import read_onnx

    if model.suffix == ".onnx":
        if read_onnx(model).precision != "fp32":
            raise SystemExit(f"bench/gpu.py: error: {model} is not fp32; give the fp32 export or the checkpoint")
        return model
    try:
        from fastyolo.train.checkpoint import load_model
        from fastyolo.train.export import export_onnx
    except ImportError:
        raise MissingDependencyError("exporting a checkpoint needs torch: pip install 'fastyolo[train]'") from None
    path = out / f"{model.stem}.fp32.onnx"
    export_onnx(load_model(model), path, untrained=False)
    return path


def detect_all(detector, frames: list[np.ndarray]) -> list:
    return [detector.detect(f) for f in frames]


def parity(cpu_dets: list, gpu_dets: list) -> float | None:
    from fastyolo.metrics import evaluate

    truths = [(d.boxes, d.class_ids) for d in cpu_dets]
    return evaluate(gpu_dets, truths)["map50"]


def time_engine(plan: Path, video: Path, frames: int, warmup: int, conf: float, iou: float) -> dict:
    from tqdm import tqdm

    from fastyolo.fileio import VideoReader
    from fastyolo.gpu import TensorRTPipeline

    pipe = TensorRTPipeline(plan, timing=True)
    reader = VideoReader(video)
    host = np.zeros((3, frames))
    device = {stage: np.zeros(frames) for stage in ("h2d", "infer", "decode_nms", "d2h")}
    try:
        for _ in range(warmup):
            frame = reader.read()
            pipe.postprocess(pipe.infer(pipe.preprocess([frame])), np.array([[frame.shape[1], frame.shape[0]]], float),
                             conf, iou, 100)
        start = time.perf_counter()
        for n in tqdm(range(frames), desc=plan.name, unit="frame", leave=False):
            frame = reader.read()
            sizes = np.array([[frame.shape[1], frame.shape[0]]], np.float64)
            t0 = time.perf_counter()
            batch = pipe.preprocess([frame])
            t1 = time.perf_counter()
            grids = pipe.infer(batch)
            t2 = time.perf_counter()
            pipe.postprocess(grids, sizes, conf, iou, 100)
            t3 = time.perf_counter()
            host[:, n] = (t1 - t0, t2 - t1, t3 - t2)
            for stage, ms in pipe.last_timings().items():
                device[stage][n] = ms
        seconds = time.perf_counter() - start
    finally:
        reader.close()

    def pct(values: np.ndarray) -> dict:
        return {f"p{q}": round(float(np.percentile(values, q)), 4) for q in (50, 90, 99)}

    return {
        "fps": round(frames / seconds, 1),
        "host_ms": {name: pct(host[i] * 1000) for i, name in enumerate(("preprocess", "infer", "postprocess"))},
        "device_ms": {stage: pct(values) for stage, values in device.items()},
        "info": pipe.info,
    }


def main() -> int:
    args = parse_args()
    from fastyolo.errors import FastYoloError

    try:
        from fastyolo.gpu.availability import require_gpu_stack

        require_gpu_stack()  # before any export or conversion: say at once what is missing
        return run(args)
    except FastYoloError as exc:
        print(f"bench/gpu.py: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    import cv2

    from fastyolo import Detector
    from fastyolo.fileio import sample_video
    from fastyolo.fp16 import convert_fp16
    from fastyolo.gpu import build_engine
    from fastyolo.quantize import quantize_int8

    if not args.images.is_dir():
        raise SystemExit(f"bench/gpu.py: error: no real frames at {args.images}: pass --images DIR")
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    frames = [cv2.imread(str(p)) for p in images]
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = fp32_onnx(args.model, args.out)
    onnx = {"fp16": args.out / f"{fp32.stem}.fp16.onnx", "int8": args.out / f"{fp32.stem}.int8.onnx"}
    convert_fp16(fp32, onnx["fp16"])
    quantize_int8(fp32, onnx["int8"], args.images)

    cpu = Detector(fp32, backend="onnxruntime", conf=args.conf, iou=args.iou)
    cpu_dets = detect_all(cpu, frames)
    report: dict = {"model": str(args.model), "frames_for_parity": len(frames),
                    "cpu_detections": sum(len(d) for d in cpu_dets), "engines": {}}
    for precision, path in onnx.items():
        plan = args.out / f"{fp32.stem}.{precision}.plan"
        build_engine(path, plan, max_batch=args.batch, workspace_gb=args.workspace)
        gpu = Detector(plan, conf=args.conf, iou=args.iou)
        map50 = parity(cpu_dets, detect_all(gpu, frames))
        timing = time_engine(plan, args.video or sample_video(), args.frames, args.warmup, args.conf, args.iou)
        report["engines"][precision] = {
            "map50_vs_cpu_fp32": map50, "threshold": THRESHOLDS[precision],
            "pass": map50 is not None and map50 >= THRESHOLDS[precision], **timing,
        }
        d = timing["device_ms"]
        print(f"{precision}: mAP@0.5 vs CPU fp32 {map50 if map50 is None else round(map50, 4)} "
              f"(>= {THRESHOLDS[precision]}), {timing['fps']} FPS; device p50 ms: "
              + ", ".join(f"{k} {v['p50']}" for k, v in d.items()))
    out = args.out / "gpu.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0 if all(e["pass"] for e in report["engines"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
