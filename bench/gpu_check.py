"""One prepared check of the GPU path on an NVIDIA machine: correctness on hardware, kernel and stage times, FPS.

Made for a machine with only Python 3.12, torch (CUDA), numba + numba-cuda, cuda-bindings, onnx,
onnxruntime (CPU), opencv-python-headless, numpy, tqdm, matplotlib: no TensorRT, no OpenVINO,
no network. From a plain copy of the repository, either

    pip install --no-deps --no-build-isolation -e .     # kernels/ and train/ import as fastyolo.kernels/.train
    python bench/gpu_check.py

or without installing anything: `python bench/gpu_check.py` finds no installed fastyolo and
imports the copy through a symlink tree in a temporary folder (fastyolo/ + kernels/ as
fastyolo/kernels + train/ as fastyolo/train), which is what the editable install maps.

    python bench/gpu_check.py [--json bench/artifacts/gpu_check.json] [--checkpoint best.pt] [--budget 270]
    NUMBA_ENABLE_CUDASIM=1 python bench/gpu_check.py --simulate     # dry run on a CPU (tiny sizes)

Writes JSON (and prints it) with, in this order, each section skipped once --budget seconds are spent:

1. kernels_vs_reference: the decode + NMS kernel against kernels/reference.py on thousands of
   random grids (4 kinds, batches 1/8/64, random thresholds) and on real network outputs (the
   bundled highway clip through untrained ResNet-18/50, or --checkpoint, fp16 and fp32): images
   and elements that differ (must be 0); the normalise kernel against the host on real frames;
2. kernel_us: GPU time per launch from CUDA events around 200 launches queued behind a busy
   kernel (torch.cuda._sleep), so the host's launch cost is not in it; batch 1, 8, 64;
3. stages_ms: the torch engine's CUDA-event stage medians (eager), host resize per frame, and the
   whole-call wall time with the CUDA graph;
4. fps: end to end from decoded frames in host memory to Detections, batch 1 and 8, ResNet-18 and
   ResNet-50 fp16, torch engine with and without the graph, and the plain torch eager model on the
   same frames (host preprocess, .cuda(), model, .cpu(), njit decode) as the baseline; agreement
   (mAP@0.5) of the fp16 engine's detections against fp32 on the CPU;
5. tensorrt: only where TensorRT imports (absent on the project's GPU machines).

Nothing here is a claim until it has run on a GPU; on a machine without one it stops in one line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONF, IOU, TOP_K = 0.25, 0.45, 100


def ensure_importable() -> str:
    """Import fastyolo from this copy: installed (editable) if it is, else through a symlink tree."""
    spec = importlib.util.find_spec("fastyolo")
    if spec is not None and importlib.util.find_spec("fastyolo.kernels") is not None:
        return f"installed ({Path(spec.origin).parent})"
    tree = Path(tempfile.mkdtemp(prefix="fastyolo-tree-"))
    package = tree / "fastyolo"
    package.mkdir()
    for entry in (ROOT / "fastyolo").iterdir():
        if entry.name not in ("kernels", "train"):
            (package / entry.name).symlink_to(entry)
    (package / "kernels").symlink_to(ROOT / "kernels")
    (package / "train").symlink_to(ROOT / "train")
    sys.path.insert(0, str(tree))
    return f"symlink tree {tree}"


class Budget:
    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.spent()


def section(report: dict, name: str, budget: Budget, need: float, fn) -> None:
    """Run one section into report[name]; skip it when less than `need` seconds are left; never abort the run."""
    if budget.left() < need:
        report[name] = {"skipped": f"budget: {budget.left():.0f} s left, section needs ~{need:.0f} s"}
        return
    t0 = time.perf_counter()
    try:
        report[name] = fn()
    except Exception as exc:
        report[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    if isinstance(report[name], dict):
        report[name]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[{budget.spent():6.1f} s] {name}: {json.dumps(report[name])[:400]}", flush=True)


# ---------------------------------------------------------------- inputs


def clip_frames(count: int) -> list[np.ndarray]:
    from fastyolo.bench import VideoReader, sample_video

    reader = VideoReader(sample_video())
    frames = [reader.read() for _ in range(count)]
    reader.close()
    return frames


def random_grids(rng: np.random.Generator, n: int, mode: str) -> np.ndarray:
    """The four kinds of tests/test_cuda_kernels.py."""
    from fastyolo.layout import CELL_SIZE, GRID

    shape = (n, GRID, GRID, CELL_SIZE)
    if mode == "uniform":
        return rng.random(shape, dtype=np.float32)
    if mode == "wide":
        return rng.uniform(-0.5, 1.5, shape).astype(np.float32)
    if mode == "coarse":
        return rng.choice(np.array([0.0, 0.25, 0.5, 1.0], np.float32), size=shape)
    grids = rng.random(shape, dtype=np.float32) * np.float32(0.2)
    hot = rng.random(shape[:3]) < 0.1
    grids[hot] = rng.random((int(hot.sum()), CELL_SIZE), dtype=np.float32)
    return grids


def network(backbone: str, checkpoint: Path | None):
    """The checkpoint's network, or an untrained one of `backbone` (seeded) built by the project's own YoloNet."""
    import torch

    if checkpoint is not None:
        from fastyolo.train.checkpoint import load_model

        return load_model(checkpoint)
    from fastyolo.train.model import YoloNet

    torch.manual_seed(0)
    return YoloNet(backbone).eval()


# ---------------------------------------------------------------- 1. correctness on hardware


def compare_kernel(grids, sizes, conf, iou, top_k, simulate: bool) -> tuple[int, int, list]:
    """Images and elements where the kernel differs from the reference (count mismatch: every row of the longer)."""
    from fastyolo.kernels.cuda import decode_nms_batch_cuda
    from fastyolo.kernels.reference import decode_nms_reference

    boxes, scores, classes = decode_nms_batch_cuda(grids, sizes, conf, iou, top_k)
    images = elements = 0
    examples = []
    for n in range(len(grids)):
        rb, rs, rc = decode_nms_reference(grids[n], sizes[n, 0], sizes[n, 1], conf, iou, top_k)
        if len(rb) != len(boxes[n]):
            diff = 6 * max(len(rb), len(boxes[n]))
        else:
            diff = int((boxes[n] != rb).sum() + (scores[n] != rs).sum() + (classes[n] != rc).sum())
        if diff:
            images += 1
            elements += diff
            if len(examples) < 5:
                examples.append({"kept": [len(boxes[n]), len(rb)], "conf": conf, "iou": iou, "top_k": top_k,
                                 "max_abs_box_diff": float(np.abs(boxes[n] - rb).max()) if len(rb) == len(boxes[n])
                                 and len(rb) else None})
    return images, elements, examples


def kernels_vs_reference(args, real: dict[str, np.ndarray], frames: list[np.ndarray]) -> dict:
    rng = np.random.default_rng(0)
    out: dict = {}
    batches = (1, 2) if args.simulate else (1, 8, 64)
    rounds = 1 if args.simulate else args.random_rounds
    total = images = elements = 0
    examples: list = []
    for mode in ("uniform", "wide", "coarse", "sparse"):
        for _ in range(rounds):
            for b in batches:
                grids = random_grids(rng, b, mode)
                sizes = np.stack([rng.integers(1, 2000, b), rng.integers(1, 1200, b)], axis=1).astype(np.float64)
                conf = float(rng.choice([0.0, 0.05, 0.25, 0.5]))
                iou = float(rng.choice([0.0, 0.3, 0.45, 0.7, 1.0]))
                top_k = int(rng.choice([1, 7, 100, 242]))
                i, e, ex = compare_kernel(grids, sizes, conf, iou, top_k, args.simulate)
                total, images, elements = total + b, images + i, elements + e
                examples += ex
    out["random"] = {"images": total, "images_differ": images, "elements_differ": elements, "examples": examples[:5]}
    total = images = elements = 0
    examples = []
    for name, grids in real.items():
        sizes = np.array([(f.shape[1], f.shape[0]) for f in frames[: len(grids)]], np.float64)
        for conf, iou, top_k in ((0.05, 0.45, 100), (0.25, 0.45, 100), (0.1, 0.7, 242), (0.0, 0.3, 20)):
            step = 2 if args.simulate else 64
            for s in range(0, len(grids), step):
                i, e, ex = compare_kernel(grids[s : s + step], sizes[s : s + step], conf, iou, top_k, args.simulate)
                total, images, elements = total + len(grids[s : s + step]), images + i, elements + e
                examples += [{"grids": name, **x} for x in ex]
    out["real"] = {"images": total, "images_differ": images, "elements_differ": elements, "examples": examples[:5],
                   "sources": sorted(real)}
    if not args.simulate:  # the normalise kernel on real frames (simulated it would take minutes per frame)
        from fastyolo.kernels.cuda import normalize_cuda

        from fastyolo.preprocess import normalize, resize_rgb

        rgb = np.stack([resize_rgb(f) for f in frames[:64]])
        got = normalize_cuda(rgb)
        differ = sum(int((got[i] != normalize(rgb[i])).sum()) for i in range(len(rgb)))
        out["normalize"] = {"frames": len(rgb), "elements_differ": differ}
    out["pass"] = out["random"]["elements_differ"] == 0 and out["real"]["elements_differ"] == 0 and \
        out.get("normalize", {}).get("elements_differ", 0) == 0
    return out


# ---------------------------------------------------------------- 2. kernel GPU time


def kernel_times(real: dict[str, np.ndarray], frames: list[np.ndarray]) -> dict:
    """GPU time per decode + NMS launch: 200 launches queued behind torch.cuda._sleep, events around them."""
    import torch
    from fastyolo.kernels import cuda as kernels

    from fastyolo.layout import MAX_BOXES

    stream = torch.cuda.Stream()
    numba_stream = kernels.cuda.external_stream(stream.cuda_stream)
    launches = 200
    source = next(iter(real.values()))
    worst = random_grids(np.random.default_rng(1), 64, "uniform")
    cases = {}
    for b in (1, 8, 64):
        real_b = np.concatenate([source] * (64 // len(source) + 1))[:b] if len(source) < b else source[:b]
        for label, grids, conf in ((f"real_conf0.25_b{b}", real_b, 0.25), (f"real_conf0.05_b{b}", real_b, 0.05),
                                   (f"all_242_candidates_b{b}", worst[:b], 0.0)):
            sizes = np.array([(frames[0].shape[1], frames[0].shape[0])] * b, np.float64)
            with torch.cuda.stream(stream):
                d_grids = torch.from_numpy(np.ascontiguousarray(grids)).cuda()
                d_sizes = torch.from_numpy(sizes).cuda()
                # rows for every launch: the header offset only grows, no reset between launches
                d_rows = torch.empty((launches + 1) * b * MAX_BOXES, kernels.ROW_VALUES, dtype=torch.float32, device="cuda")
                d_header = torch.zeros(1 + 2 * b, dtype=torch.int32, device="cuda")
            views = [kernels.cuda.as_cuda_array(t, sync=False) for t in (d_grids, d_sizes, d_rows, d_header)]
            kernels.launch_decode_nms(*views[:2], conf, IOU, TOP_K, *views[2:], numba_stream)  # compile / warm
            stream.synchronize()
            kept = int(d_header[0].item()) / b
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            with torch.cuda.stream(stream):
                torch.cuda._sleep(int(2e8))  # ~100 ms busy: the launches below queue behind it
                start.record(stream)
                host0 = time.perf_counter()
                for _ in range(launches):
                    kernels.launch_decode_nms(*views[:2], conf, IOU, TOP_K, *views[2:], numba_stream)
                host_us = (time.perf_counter() - host0) / launches * 1e6
                end.record(stream)
            end.synchronize()
            cases[label] = {"gpu_us_per_launch": round(start.elapsed_time(end) * 1000 / launches, 2),
                            "gpu_us_per_frame": round(start.elapsed_time(end) * 1000 / launches / b, 2),
                            "host_us_per_launch": round(host_us, 1), "kept_per_frame": round(kept, 1)}
    # the njit decode on this machine's CPU, same grids, for the comparison the issue makes
    from fastyolo.kernels import decode_nms_batch

    sizes = np.array([(frames[0].shape[1], frames[0].shape[0])], np.float64)
    for conf in (0.25, 0.05):
        decode_nms_batch(source[:1], sizes, conf, IOU, TOP_K)
        t0 = time.perf_counter()
        for _ in range(500):
            decode_nms_batch(source[:1], sizes, conf, IOU, TOP_K)
        cases[f"njit_cpu_conf{conf}_b1_us"] = round((time.perf_counter() - t0) / 500 * 1e6, 2)
    return cases


# ---------------------------------------------------------------- 3./4. stages and FPS


def _sizes(frames) -> np.ndarray:
    return np.array([(f.shape[1], f.shape[0]) for f in frames], np.float64)


def _call(pipe, batch):
    return pipe.postprocess(pipe.infer(pipe.preprocess(batch)), _sizes(batch), CONF, IOU, TOP_K)


def _fps(fn, frames: list[np.ndarray], batch: int, seconds: float) -> float:
    batches = [frames[i : i + batch] for i in range(0, len(frames) - batch + 1, batch)]
    for b in batches[:3]:
        fn(b)
    done, t0, i = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        fn(batches[i % len(batches)])
        done += batch
        i += 1
    return round(done / (time.perf_counter() - t0), 1)


def eager_torch_baseline(net_fp16, device):
    """The plain way: host preprocess (f32), upload, model, download, njit decode."""
    import torch
    from fastyolo.kernels import decode_nms_batch

    from fastyolo.pipeline import split_batch
    from fastyolo.preprocess import preprocess

    def run(batch):
        x = torch.from_numpy(preprocess(batch)).to(device).to(torch.float16).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            grids = net_fp16(x).float().cpu().numpy()
        return split_batch(*decode_nms_batch(grids, _sizes(batch), CONF, IOU, TOP_K))

    return run


def agreement(got, want) -> float | None:
    """mAP@0.5 of `got` with `want` as ground truth (numpy VOC AP; no faster-coco-eval needed)."""
    from fastyolo.metrics import voc_ap50

    truths = [(d.boxes.astype(np.float64), d.class_ids.astype(np.int64)) for d in want]
    ap = [a for a in voc_ap50(got, truths, [np.zeros(len(t[0]), bool) for t in truths]) if a is not None]
    return round(float(np.mean(ap)), 4) if ap else None


def engines(args, frames: list[np.ndarray]) -> dict:
    import torch

    from fastyolo.gpu.torch_engine import TorchPipeline

    torch.backends.cudnn.benchmark = True
    out: dict = {}
    backbones = ("resnet18",) if args.simulate else ("resnet18", "resnet50")
    device = "cpu" if args.simulate else "cuda"
    seconds = 0.5 if args.simulate else args.seconds
    for backbone in backbones:
        net = network(backbone, args.checkpoint)
        name = getattr(net, "backbone_name", backbone) if args.checkpoint else backbone
        row: dict = {}
        precision = "fp32" if args.simulate else "fp16"
        graph = TorchPipeline(net, precision=precision, device=device, max_batch=8)
        eager = TorchPipeline(network(backbone, args.checkpoint), precision=precision, device=device, max_batch=8,
                              cuda_graph=False, timing=True)
        for b in (1, 8):
            row[f"engine_graph_b{b}_fps"] = _fps(lambda x, p=graph: _call(p, x), frames, b, seconds)
            row[f"engine_eager_b{b}_fps"] = _fps(lambda x, p=eager: _call(p, x), frames, b, seconds)
        if not args.simulate:
            base = eager_torch_baseline(network(backbone, args.checkpoint).cuda().half().to(
                memory_format=torch.channels_last), device)
            for b in (1, 8):
                row[f"torch_eager_baseline_b{b}_fps"] = _fps(base, frames, b, seconds)
        # graph vs eager: the same kept rows (same network, same kernel)
        same = all(np.array_equal(g.boxes, e.boxes) and np.array_equal(g.scores, e.scores)
                   for g, e in zip(_call(graph, frames[:8]), _call(eager, frames[:8]), strict=True))
        row["graph_equals_eager"] = bool(same)
        row["graph_captures"] = graph.graph_captures
        if not args.simulate:
            stages = {k: [] for k in ("h2d_normalize", "network", "decode_nms", "d2h")}
            walls, resize = [], []
            for i in range(60):
                batch = [frames[i % len(frames)]]
                t0 = time.perf_counter()
                pending = eager.preprocess(batch)
                resize.append(time.perf_counter() - t0)
                eager.postprocess(eager.infer(pending), _sizes(batch), CONF, IOU, TOP_K)
                for k, v in eager.last_timings().items():
                    stages[k].append(v)
                t0 = time.perf_counter()
                _call(graph, batch)
                walls.append(time.perf_counter() - t0)
            row["stages_ms_b1_eager_events"] = {k: round(float(np.median(v)), 4) for k, v in stages.items()}
            row["host_resize_ms_per_frame"] = round(float(np.median(resize)) * 1e3, 4)
            row["graph_call_wall_ms_b1"] = round(float(np.median(walls)) * 1e3, 4)
            # fp16 on the GPU against fp32 on the CPU, same network, 32 real frames
            cpu = TorchPipeline(network(backbone, args.checkpoint), precision="fp32", device="cpu", max_batch=8)
            got, want = [], []
            for s in range(0, 32, 8):
                got += _call(graph, frames[s : s + 8])
                want += _call(cpu, frames[s : s + 8])
            row["agreement_map50_fp16_vs_cpu_fp32"] = agreement(got, want)
            row["detections_fp16_gpu"] = sum(len(d) for d in got)
            row["detections_fp32_cpu"] = sum(len(d) for d in want)
        out[name] = row
        del graph, eager
    return out


def real_grids(args, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Real network outputs on the clip frames: untrained ResNet-18/50 (or the checkpoint), fp16 and fp32."""
    from fastyolo.gpu.torch_engine import TorchPipeline

    out = {}
    device = "cpu" if args.simulate else "cuda"
    count = 2 if args.simulate else len(frames)  # simulated: one batch of 2 per threshold set (~1 s an image)
    for backbone in (("resnet18",) if args.simulate or args.checkpoint else ("resnet18", "resnet50")):
        for precision in (("fp32",) if args.simulate else ("fp16", "fp32")):
            pipe = TorchPipeline(network(backbone, args.checkpoint), precision=precision, device=device, max_batch=8)
            grids = np.concatenate([pipe.raw(frames[s : min(s + 8, count)]) for s in range(0, count, 8)])
            out[f"{backbone if not args.checkpoint else 'checkpoint'}_{precision}"] = grids
    return out


def tensorrt_section() -> dict:
    try:
        import tensorrt
    except Exception as exc:
        return {"present": False, "why": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"present": True, "version": str(tensorrt.__version__),
            "note": "run python bench/gpu.py CHECKPOINT.pt for the TensorRT engines' parity and FPS"}


# ---------------------------------------------------------------- main


def environment(args, how: str) -> dict:
    import numba
    import torch

    env = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
           "torch": torch.__version__, "fastyolo_from": how, "simulate": args.simulate,
           "numpy_has_row_stack_before_fastyolo": ROW_STACK_AT_START}
    try:
        import numba_cuda

        env["numba_cuda"] = numba_cuda.__version__
    except ImportError:
        env["numba_cuda"] = None
    if not args.simulate:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return env


ROW_STACK_AT_START = "row_stack" in vars(np)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "artifacts" / "gpu_check.json")
    parser.add_argument("--checkpoint", type=Path, help="a trained best.pt (default: untrained ResNet-18 and -50)")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for the whole run [270]")
    parser.add_argument("--frames", type=int, default=64, help="clip frames held in host memory [64]")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per FPS figure [3]")
    parser.add_argument("--random-rounds", type=int, default=12,
                        help="random rounds per grid kind, each 1+8+64 images [12: 3,504 images]")
    parser.add_argument("--simulate", action="store_true",
                        help="dry run without a GPU: NUMBA_ENABLE_CUDASIM=1, torch on the CPU, tiny sizes, no timings")
    args = parser.parse_args()
    budget = Budget(args.budget)
    how = ensure_importable()
    if args.simulate:
        if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            print("bench/gpu_check.py: error: --simulate needs NUMBA_ENABLE_CUDASIM=1 in the environment", file=sys.stderr)
            return 2
    else:
        from fastyolo.gpu.availability import gpu_problem

        try:
            import torch

            problem = None if torch.cuda.is_available() else "torch sees no CUDA GPU"
        except ImportError:
            problem = "torch is not installed"
        problem = problem or gpu_problem()
        if problem:
            print(f"bench/gpu_check.py: error: {problem}: this check needs an NVIDIA GPU "
                  "(a dry run on a CPU: NUMBA_ENABLE_CUDASIM=1 python bench/gpu_check.py --simulate)", file=sys.stderr)
            return 2
    report: dict = {"environment": environment(args, how)}
    if args.simulate:
        report["note"] = "dry run on a CPU (numba's CUDA simulator, torch on the CPU): no figure here is a GPU measurement"
    frames = clip_frames(8 if args.simulate else args.frames)
    real: dict = {}

    def collect():
        real.update(real_grids(args, frames))
        return {"grids": {k: list(v.shape) for k, v in real.items()}}

    section(report, "real_grids", budget, 10, collect)
    section(report, "kernels_vs_reference", budget, 30, lambda: kernels_vs_reference(args, real, frames))
    if not args.simulate:
        section(report, "kernel_us", budget, 20, lambda: kernel_times(real, frames))
    section(report, "engines", budget, 60, lambda: engines(args, frames))
    section(report, "tensorrt", budget, 0, tensorrt_section)
    report["seconds"] = round(budget.spent(), 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
