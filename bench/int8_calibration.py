"""Which int8 calibration keeps the detections: every method x fp32-part choice, scored against fp32.

    python bench/int8_calibration.py MODEL.onnx --calib VIDEO_OR_DIR --data DIR --json bench/artifacts/int8_calib.json

Each variant is quantised from the same fp32 ONNX on the --calib frames, then its detections on
the --data frames (a different source, so this is not scored on what it was calibrated on) are
scored with mAP@0.5 against the fp32 detections as ground truth (fastyolo.agreement), on OpenVINO
and onnxruntime. The network time of each variant is measured too (median of --runs single-frame calls).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def network_ms(model: Path, backend: str, runs: int) -> float:
    from fastyolo.backends import open_session
    from fastyolo.model_file import read_onnx

    session = open_session(read_onnx(model), backend, "int8", 2)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for _ in range(3):
        session.run(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="fp32 ONNX")
    p.add_argument("--calib", type=Path, required=True, help="calibration frames (folder or video)")
    p.add_argument("--data", type=Path, required=True, help="frames to score on (folder or video)")
    p.add_argument("--calib-frames", type=int, default=64)
    p.add_argument("--check-frames", type=int, default=75)
    p.add_argument("--methods", default="minmax,entropy,percentile")
    p.add_argument("--keeps", default="head;none;head+first_conv", help="';'-separated, '+' joins parts")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--conf", type=float, default=0.25, help="threshold of the fp32 reference detections [0.25]")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from fastyolo.agreement import check_precisions
    from fastyolo.quantize import calibration_frames, quantize_int8

    frames = calibration_frames(args.data, args.check_frames)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastyolo-calib-") as tmp:
        for method in args.methods.split(","):
            for keep_text in args.keeps.split(";"):
                keep = () if keep_text == "none" else tuple(keep_text.split("+"))
                out = Path(tmp) / f"{method}-{keep_text}.int8.onnx"
                t0 = time.perf_counter()
                quantize_int8(args.model, out, args.calib, method=method, frames=args.calib_frames, keep_fp32=keep,
                              progress=False)
                seconds = time.perf_counter() - t0
                checked = check_precisions(args.model, out, frames, progress=False, conf=args.conf,
                                           combos=(("openvino", "int8"), ("onnxruntime", "int8")))
                row = {"method": method, "fp32_parts": keep_text, "quantise_s": round(seconds, 1)}
                for r in checked:
                    row[f"{r['backend']}_map50"] = r["map50"]
                    row[f"{r['backend']}_map50_95"] = r["map50_95"]
                    row[f"{r['backend']}_grid_mean_abs_diff"] = r["grid_mean_abs_diff"]
                    row[f"{r['backend']}_ms"] = round(network_ms(out, r["backend"], args.runs), 2)
                row["reference_boxes"] = checked[0]["reference_boxes"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n{'method':<11}{'fp32 parts':<18}{'OV mAP50':>9}{'ORT mAP50':>10}{'OV .5:.95':>10}{'OV ms':>8}{'ORT ms':>8}"
          "  (vs fp32, "
          f"{len(frames)} frames of {args.data.name}, {rows[0]['reference_boxes']} fp32 boxes)")
    for r in rows:
        print(f"{r['method']:<11}{r['fp32_parts']:<18}{r['openvino_map50']:>9.4f}{r['onnxruntime_map50']:>10.4f}"
              f"{r['openvino_map50_95']:>10.4f}"
              f"{r['openvino_ms']:>8.2f}{r['onnxruntime_ms']:>8.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(args.model), "calib": str(args.calib), "data": str(args.data),
                                         "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
