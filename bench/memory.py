"""Memory and stability: run many frames (the clip loops) and watch resident memory after warm-up.

    python bench/memory.py --frames 10000 --precision int8 --plot bench/artifacts/memory.png

Resident memory is read from /proc/self/statm every --every frames; the peak is the kernel's
high-water mark (getrusage ru_maxrss). Growth after warm-up is reported as the difference and
as a least-squares slope in MiB per 1000 frames. A script, not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024.0 * 1024.0


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / MIB


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video", nargs="?", help="video (default: the bundled highway clip)")
    p.add_argument("--model", help="fp32 .onnx (default: the untrained ResNet-50 reference)")
    p.add_argument("--backend", default="openvino", choices=("openvino", "onnxruntime"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"))
    p.add_argument("--mode", default="latency", choices=("latency", "throughput"),
                   help="latency: Detector.detect frame by frame; throughput: run_bench(mode='throughput') in chunks")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=10000)
    p.add_argument("--warmup", type=int, default=300, help="frames before the baseline is taken [300]")
    p.add_argument("--every", type=int, default=100, help="sample memory every N frames [100]")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--plot", type=Path, help="PNG of resident memory against frames")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from fastyolo import Detector
    from fastyolo.bench import run_bench
    from fastyolo.fileio import VideoReader, sample_video
    from fastyolo.quantize import int8_model_for
    from fastyolo.reference_model import untrained_model

    model = Path(args.model) if args.model else untrained_model()
    if args.precision == "int8":
        model = int8_model_for(model)
    video = args.video or sample_video()
    detector = Detector(model, backend=args.backend, precision=args.precision, threads=args.threads)
    start_rss = rss_mib()
    frames_done, samples = [], []
    total = args.warmup + args.frames
    bar = tqdm(total=total, desc="memory", unit="frame")
    if args.mode == "latency":
        reader = VideoReader(video)
        try:
            for n in range(total):
                detector.detect(reader.read())
                bar.update()
                if (n + 1) % args.every == 0:
                    frames_done.append(n + 1)
                    samples.append(rss_mib())
        finally:
            reader.close()
    else:
        done = 0
        while done < total:  # each chunk opens the video, starts the decode thread and the inference workers anew
            chunk = min(args.every, total - done)
            run_bench(detector, video, frames=chunk, warmup=0, progress=False, mode="throughput", batch=args.batch)
            done += chunk
            bar.update(chunk)
            frames_done.append(done)
            samples.append(rss_mib())
    bar.close()

    frames_done_a, samples_a = np.array(frames_done), np.array(samples)
    after = frames_done_a >= args.warmup
    base = float(samples_a[after][0])
    slope = float(np.polyfit(frames_done_a[after], samples_a[after], 1)[0] * 1000.0) if after.sum() > 1 else 0.0
    result = {
        "model": str(model), "backend": args.backend, "precision": detector.info["precision"], "mode": args.mode,
        "batch": args.batch if args.mode == "throughput" else 1, "threads": detector.info["threads"],
        "frames": args.frames, "warmup": args.warmup,
        "rss_before_first_frame_mib": round(start_rss, 1),
        "rss_after_warmup_mib": round(base, 1),
        "rss_final_mib": round(float(samples_a[-1]), 1),
        "rss_max_after_warmup_mib": round(float(samples_a[after].max()), 1),
        "growth_after_warmup_mib": round(float(samples_a[-1]) - base, 2),
        "slope_mib_per_1000_frames": round(slope, 3),
        "peak_rss_mib": round(peak_mib(), 1),
    }
    for key, value in result.items():
        print(f"{key:<30}{value}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.plot(frames_done_a, samples_a, lw=1.5, label="resident memory")
        ax.axvline(args.warmup, color="grey", ls="--", lw=1, label="end of warm-up")
        ax.axhline(result["peak_rss_mib"], color="tab:red", ls=":", lw=1, label=f"peak {result['peak_rss_mib']} MiB")
        ax.set_xlabel("frames")
        ax.set_ylabel("RSS (MiB)")
        backbone = detector.info.get("backbone", "model")
        ax.set_title(f"{backbone}, {args.backend} {result['precision']}, {args.mode}: "
                     f"{result['growth_after_warmup_mib']:+.1f} MiB after warm-up", fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**result, "samples": {"frames": frames_done, "rss_mib": samples}}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
