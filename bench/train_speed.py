"""Training speed: images per second of the data pipeline, of the training step and of the whole `fastyolo train`.

Three measurements, for each device (cpu, and cuda when torch sees a GPU) and backbone:

1. data   the training DataLoader alone, built as training builds it (YoloDataset with augmentation,
          EpochBatches, engine._loader with the default worker count), iterated for --epochs
          epochs, each batch handed to the device as the step receives it (engine._batch_to). The first
          epoch (worker start-up, and the frame cache's build where the code has one) is reported apart
          from the steady epochs.
          Rows: frames decoded every step ("cache off") and, when fastyolo.train.cache exists, cached;
          and, where the code has --augment-on device, cached with the pixels made on the device
          (the workers only draw and build targets; train/device_augment.py warps on the device).
          Every epoch comes from one DataLoader iteration, as training reads them; the "a new iteration
          per epoch" row restarts it each epoch, as training did before (the step then waits at each
          epoch's start for the workers' first batch).
2. step   the training step alone on a synthetic batch already on the device: forward, yolo_loss,
          zero_grad, backward, optimizer step (the default AdamW); random images, targets of real
          kitti_tiny frames. fp32, bf16 autocast (fp16 + GradScaler on cuda), each also channels_last.
          Median over --steps timed steps after 3 warm-up steps. --compile adds the channels_last
          steps through torch.compile (its first step, the compilation, reported apart).
3. loop   the whole `python -m fastyolo.cli train --epochs E --val-split 0.2 --seed 0` as a user runs
          it, timed from outside: start-up, imports, data loading, every epoch's BatchNorm pass,
          validation, checkpoints and curves included. images/s = E * training frames / wall seconds.
          "before" runs the same command on the code of --before (a git worktree of that revision,
          put together as the installed package would be), "after" on this checkout; the ratio line
          compares them. When this checkout's `fastyolo train` has --amp / --cache / --augment-on,
          "after, --amp off", "after, --cache off" and "after, --augment-on device" rows show what each
          contributes. "epochs of the loop" rows divide by the epochs' own seconds instead (metrics.jsonl:
          what a long run converges to, without start-up and exit), split into the steps (and of them,
          the wait for batches), the BatchNorm pass, validation's forward passes and its mAP.

    python bench/train_speed.py                                   # everything: minutes to an hour on a CPU
    python bench/train_speed.py --backbones resnet18 --only loop  # before/after of the whole loop only
    python bench/train_speed.py --rounds 3 --json speed.json      # before/after interleaved, medians
    python bench/train_speed.py --only loop --ablations augment-on --rounds 5  # one ablation only
    python bench/train_speed.py --only loop --train-args '--eval-every 5'     # options for every loop run

With --rounds R every measurement runs R times (the loop's before and after runs alternate) and the
tables show medians. Each side's kernels and bytecode are compiled by an untimed start before the
first timed run. A run's frame cache (--cache-dir) and output folder are fresh temporary folders:
the "after" loop includes building its cache every time, and nothing is written to the user's cache.
Nothing here asserts a speed: the numbers depend on the machine, so read them, don't test them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from fastyolo.commands.train import BACKBONES

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kitti_tiny"
BEFORE_REV = "7f9bdd53e6472ee073f77e5626d0a79068121f0b"  # the code before the training-speed work
VAL_SPLIT = 0.2  # the same split as `fastyolo train --val-split 0.2 --seed 0`
SEED = 0
WARMUP_STEPS = 3
KINDS = ("data", "step", "loop")
MARK = "[train_speed] fastyolo "

# Runs `fastyolo train` (argv[1] == "cli") or only imports and compiles what a run needs (argv[1] ==
# "prime"), after printing which fastyolo it imported: the proof of which code ran. For the baseline
# (TRAIN_SPEED_ISOLATE set) the editable install's finder is dropped first; it would otherwise fill
# in any module the old tree lacks with the current checkout's.
BOOTSTRAP = r"""
import os, runpy, sys
if os.environ.get("TRAIN_SPEED_ISOLATE"):
    sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__name__", type(f).__name__).lower()]
import fastyolo, fastyolo.train
print("[train_speed] fastyolo " + fastyolo.__file__ + " | fastyolo.train " + fastyolo.train.__file__, flush=True)
if sys.argv[1] == "prime":
    import numpy as np
    import fastyolo.cli, fastyolo.train.engine
    from fastyolo.kernels import decode_nms_batch
    from fastyolo.layout import CELL_SIZE, GRID
    decode_nms_batch(np.zeros((1, GRID, GRID, CELL_SIZE), np.float32), np.array([[100.0, 100.0]]), 0.01, 0.45, 100)
else:
    sys.argv = ["fastyolo", *sys.argv[2:]]
    runpy.run_module("fastyolo.cli", run_name="__main__", alter_sys=True)
"""


@dataclass
class Row:
    device: str
    backbone: str | None  # None: the data pipeline (no network)
    kind: str  # data, step or loop
    what: str
    images_per_s: float | None  # median over the rounds; None: not available
    ms_per_step: float | None = None
    rounds: list[float] = field(default_factory=list)  # images/s of each round
    note: str = ""


@dataclass
class Side:
    """One version of the code for the whole-loop runs: its environment and where its fastyolo must come from."""

    name: str
    env: dict[str, str]
    package: Path  # the fastyolo/ folder the subprocess has to import
    train: Path  # and the folder of its fastyolo.train
    options: set[str] = field(default_factory=set)  # `fastyolo train` options it knows (--amp, --cache, ...)


# ---------------------------------------------------------------- machine and data


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def isa_caps() -> dict[str, str]:
    """The instruction-set caps set in the environment: oneDNN's convolutions, ATen's other kernels."""
    return {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
            if os.environ.get(k)}


def print_header(devices: Sequence[str]) -> None:
    print(f"cpu: {cpu_model()}, {os.cpu_count()} logical cores, bf16 {cpu_bf16()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} intra-op threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
          flush=True)
    capped = isa_caps()
    if capped:  # imitating another CPU: oneDNN's (and ATen's) instruction sets held below this one's
        print("instruction sets capped: " + ", ".join(f"{k}={v}" for k, v in capped.items()), flush=True)
    if "cuda" in devices:
        print(f"cuda: {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}", flush=True)


def load_train_frames(data: Path) -> list:
    """The training frames of `fastyolo train --data DATA --val-split 0.2 --seed 0`."""
    if not data.is_dir():
        raise SystemExit(f"train_speed: no dataset at {data}: pass --data DIR (a folder with labels.csv or label_2/)")
    from fastyolo.train.engine import split_samples

    from fastyolo.datasets import load_dataset

    samples, _report = load_dataset(data)
    train, _val = split_samples(samples, VAL_SPLIT, SEED)
    return train


def repeated_dataset(data: Path, times: int, tmp: Path) -> Path:
    """A crowdAI-layout copy of DATA (labels.csv + images/) listing every frame `times` times under new
    names (symlinks): a dataset of >= 1,000 frames for the GPU target from the 75 real ones. Every copy is
    cached and augmented as its own frame, as a real set that size would be."""
    import csv

    source = data / "labels.csv"
    if not source.is_file():
        raise SystemExit(f"train_speed: --repeat needs a crowdAI labels.csv in {data}")
    with open(source, newline="") as f:
        rows = list(csv.reader(f))
    frame = rows[0].index("Frame")
    out = tmp / f"repeated_x{times}"
    (out / "images").mkdir(parents=True)
    names = sorted({r[frame] for r in rows[1:]})
    for k in range(times):
        for name in names:
            (out / "images" / f"r{k:03d}_{name}").symlink_to((data / "images" / name).resolve())
    with open(out / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(rows[0])
        for k in range(times):
            writer.writerows([*r[:frame], f"r{k:03d}_{r[frame]}", *r[frame + 1:]] for r in rows[1:])
    return out


def train_default(name: str) -> Any:
    """A TrainConfig default: the value `fastyolo train` uses when not told otherwise."""
    from fastyolo.train.config import TrainConfig

    return TrainConfig.__dataclass_fields__[name].default


def default_workers() -> int:
    workers = train_default("workers")
    return workers if isinstance(workers, int) and workers >= 0 else min(8, os.cpu_count() or 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- 1. data pipeline alone


def build_cache(train: Sequence, cache_dir: Path) -> tuple[Any, str] | None:
    """The current code's frame cache (mode auto, as `fastyolo train` builds it), or None where it has none."""
    try:
        from fastyolo.train.cache import build_cache as build
    except ImportError:
        return None
    try:
        cache = build(train, mode="auto", cache_dir=cache_dir)
    except TypeError as exc:
        print(f"  cached row skipped: fastyolo.train.cache.build_cache(samples, mode=, cache_dir=) failed: {exc}",
              flush=True)
        return None
    if cache is None:
        return None
    mode = getattr(cache, "mode", None) or ("memory" if getattr(cache, "path", None) is None else "disk")
    return cache, str(mode)


def data_epochs(train: Sequence, device: torch.device, batch: int, workers: int, epochs: int,
                cache_dir: Path | None, on_device: bool = False,
                one_stream: bool = True) -> tuple[list[float], str] | None:
    """Seconds of each epoch through the training DataLoader, and a label.

    With `cache_dir` the frame cache is built inside the first epoch's time; None where the code has no cache.
    one_stream: one DataLoader iteration for every epoch, as training reads it; else a new iteration of the
    persistent workers per epoch (training before EpochBatches: each epoch started by waiting for a batch).
    """
    from fastyolo.train.data import EpochBatches, YoloDataset
    from fastyolo.train.engine import _batch_to, _loader

    aspect = train_default("aspect")
    started = time.perf_counter()
    augmenter = None
    if cache_dir is None:
        dataset, label = YoloDataset(train, augment=True, seed=SEED, aspect=aspect), "cache off (decode every step)"
    else:
        built = build_cache(train, cache_dir)
        if built is None:
            return None
        cache, mode = built
        extra = {}
        if on_device:
            from fastyolo.train.device_augment import DeviceAugmenter

            augmenter, extra = DeviceAugmenter(cache.large, device), {"augment_on_device": True}
        try:
            dataset = YoloDataset(train, augment=True, seed=SEED, aspect=aspect, cache=cache, **extra)
        except TypeError as exc:
            print(f"  cached row skipped: YoloDataset(cache=) failed: {exc}", flush=True)
            return None
        label = f"cached ({mode})" + (f", augmented on the {device.type}" if on_device else "")
    if not one_stream:
        label += ", a new iteration per epoch"
    plan = EpochBatches(len(dataset), batch, seed=SEED)
    plan.plan((epoch, True) for epoch in range(epochs))
    loader = _loader(dataset, batch, workers, device, plan)
    stream = iter(loader) if one_stream else None
    seconds = []
    for epoch in range(epochs):
        if not one_stream:
            plan.plan([(epoch, True)])
            stream = iter(loader)
        for _ in range(plan.per_epoch):
            # to the device, as the step receives it (normalised there; augmented there with on_device)
            _batch_to(device, next(stream), False, augmenter)
        sync(device)
        now = time.perf_counter()
        seconds.append(now - started)
        started = now
    del loader  # ends the persistent workers
    return seconds, label


def measure_data(train: Sequence, device: torch.device, batch: int, epochs: int, rounds: int,
                 tmp: Path) -> list[Row]:
    workers = default_workers()
    rows = []
    for cached, on_device, one_stream in ((False, False, True), (True, False, True), (True, False, False),
                                          (True, True, True)):
        first, steady, label = [], [], ""
        for r in range(rounds):
            what = (("cached" if cached else "cache off") + (", augmented on the device" if on_device else "")
                    + ("" if one_stream else ", a new iteration per epoch"))
            print(f"[data] {device.type}: DataLoader, {what}, batch {batch}, {workers} workers, {epochs} epochs"
                  f" (round {r + 1}/{rounds})", flush=True)
            cache_dir = Path(tempfile.mkdtemp(prefix="cache-", dir=tmp)) if cached else None
            result = data_epochs(train, device, batch, workers, epochs, cache_dir, on_device, one_stream)
            if cache_dir is not None:
                shutil.rmtree(cache_dir, ignore_errors=True)
            if result is None:
                break
            seconds, label = result
            first.append(len(train) / seconds[0])
            if len(seconds) > 1:
                steady.append(len(train) * (len(seconds) - 1) / sum(seconds[1:]))
        if not first:
            continue
        note = f"{workers} workers, {len(train)} frames"
        rows.append(_rate_row(device.type, None, "data", f"data, {label}: first epoch", first, batch, note))
        if steady:
            rows.append(_rate_row(device.type, None, "data", f"data, {label}: steady epochs", steady, batch, note))
        else:
            rows.append(Row(device.type, None, "data", f"data, {label}: steady epochs", None, note="needs --epochs >= 2"))
    return rows


def _rate_row(device: str, backbone: str | None, kind: str, what: str, rates: list[float], batch: int,
              note: str = "") -> Row:
    rate = statistics.median(rates)
    return Row(device, backbone, kind, what, rate, 1000.0 * batch / rate, rates, note)


# ---------------------------------------------------------------- 2. training step alone


def real_targets(train: Sequence, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Target boxes, mask and classes of the first training frames (un-augmented), repeated to `batch`."""
    from fastyolo.train.data import YoloDataset

    dataset = YoloDataset(train, augment=False)
    items = [dataset[i] for i in range(min(batch, len(dataset)))]
    index = torch.arange(batch) % len(items)
    return tuple(torch.stack([item[k] for item in items])[index].to(device) for k in (1, 2, 3))


class StepVariant(NamedTuple):
    what: str  # the row's label
    dtype: torch.dtype | None  # autocast dtype; None: fp32
    channels_last: bool
    benchmark: bool  # cudnn.benchmark
    compiled: bool = False  # torch.compile (inductor) of the network; its first step includes the compilation


STEP_PRECISIONS = {"fp32": ("fp32", None), "bf16": ("bf16 autocast", torch.bfloat16),
                   "fp16": ("fp16 autocast + GradScaler", torch.float16)}  # fp16: CUDA only


def step_variants(device: torch.device, compiled: bool = False,
                  names: Sequence[str] = tuple(STEP_PRECISIONS)) -> list[StepVariant]:
    """Each measured step: fp32 and bf16 (fp16 on CUDA) of `names`, each NCHW and channels_last; with
    `compiled`, also the channels_last fp32/bf16 ones through torch.compile."""
    precisions = [STEP_PRECISIONS[n] for n in names if n != "fp16" or device.type == "cuda"]
    variants = [StepVariant(f"{name}{', channels_last' if last else ''}", dtype, last, False)
                for name, dtype in precisions for last in (False, True)]
    if device.type == "cuda" and "bf16" in names:
        # Training leaves cuDNN's autotuning off (its first steps cost seconds); this row says what it would give.
        variants.append(StepVariant("bf16 autocast, channels_last, cudnn.benchmark", torch.bfloat16, True, True))
    if compiled:
        variants += [StepVariant(f"{name}, channels_last, torch.compile", dtype, True, False, True)
                     for name, dtype in precisions if dtype is not torch.float16]
    return variants


def step_seconds(backbone: str, device: torch.device, batch: int, steps: int, targets: tuple[torch.Tensor, ...],
                 variant: StepVariant) -> tuple[float, float]:
    """Median seconds of one training step (after WARMUP_STEPS untimed ones), and the first step's seconds."""
    dtype, channels_last, benchmark = variant.dtype, variant.channels_last, variant.benchmark
    from fastyolo.train.loss import yolo_loss
    from fastyolo.train.model import YoloNet
    from fastyolo.train.schedule import make_optimizer

    from fastyolo.layout import INPUT_SIZE

    torch.backends.cudnn.benchmark = benchmark
    torch.manual_seed(SEED)
    model = YoloNet(backbone).to(device).train()
    images = torch.randn(batch, 3, INPUT_SIZE, INPUT_SIZE, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, train_default("optimizer"))
    network = model
    if variant.compiled:
        torch._dynamo.reset()  # every round compiles afresh (torch's on-disk caches: see main)
        network = torch.compile(model)
    scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
    boxes, mask, classes = targets
    times = []
    for _ in range(WARMUP_STEPS + steps):
        sync(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            out = network(images)
        loss, _parts = yolo_loss(out.float(), boxes, mask, classes)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        sync(device)
        times.append(time.perf_counter() - started)
    torch.backends.cudnn.benchmark = False  # torch's default, as training runs
    return statistics.median(times[WARMUP_STEPS:]), times[0]


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below AMX that keep native bf16 dot products (AVX512-BF16 and later).
NATIVE_BF16_CAPS = ("AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_2_512")


def cpu_bf16() -> str:
    """What a bf16 convolution runs on here: AMX tiles, other native bf16 (AVX512-BF16), or emulation;
    with oneDNN's instruction set capped (ONEDNN_MAX_CPU_ISA), what the cap leaves."""
    from fastyolo.train.engine import cpu_has_amx, onednn_isa_cap

    cap = onednn_isa_cap()
    try:
        if cpu_has_amx():
            return "AMX"
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported() and (cap is None or cap in NATIVE_BF16_CAPS)
        return "native (no AMX)" if native else "emulated"
    except (AttributeError, RuntimeError):
        return "unknown"


def cpu_bf16_note() -> str:
    kind = cpu_bf16()
    return "bf16 emulated on this CPU" if kind == "emulated" else ""


def measure_step(train: Sequence, backbone: str, device: torch.device, batch: int, steps: int,
                 rounds: int, compiled: bool = False, precisions: Sequence[str] = tuple(STEP_PRECISIONS)) -> list[Row]:
    targets = real_targets(train, batch, device)
    rows = []
    for variant in step_variants(device, compiled, precisions):
        what = variant.what
        rates, firsts, failure = [], [], ""
        for r in range(rounds):
            print(f"[step] {device.type} {backbone}: {what}, batch {batch}, {steps} steps (round {r + 1}/{rounds})",
                  flush=True)
            try:
                median, first = step_seconds(backbone, device, batch, steps, targets, variant)
            except (RuntimeError, NotImplementedError) as exc:
                failure = f"n/a: {str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__}"
                break
            rates.append(batch / median)
            firsts.append(first)
        notes = [cpu_bf16_note() if device.type == "cpu" and variant.dtype is torch.bfloat16 else ""]
        if variant.compiled and firsts:
            notes.append(f"first step {firsts[0]:.1f} s (compiles, empty cache)"
                         + (f", later rounds {statistics.median(firsts[1:]):.1f} s" if len(firsts) > 1 else ""))
        note = "; ".join(n for n in notes if n)
        if rates:
            rows.append(_rate_row(device.type, backbone, "step", f"step, {what}", rates, batch, note))
        else:
            rows.append(Row(device.type, backbone, "step", f"step, {what}", None, note=failure))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------- 3. the whole `fastyolo train`


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


def before_tree(rev: str, tmp: Path) -> Path | None:
    """The code of `rev` laid out as the installed package (fastyolo/, fastyolo/train, fastyolo/kernels); None: skipped."""
    if rev.lower() == "none":
        return None
    if git("rev-parse", "--git-dir").returncode != 0:
        print(f"before side skipped: {REPO} is not a git checkout", flush=True)
        return None
    if git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode != 0:
        print(f"before side skipped: revision {rev} is not in this repository", flush=True)
        return None
    worktree, tree = tmp / "before-worktree", tmp / "before"
    added = git("worktree", "add", "--detach", str(worktree), rev)
    if added.returncode != 0:
        print(f"before side skipped: git worktree add failed: {added.stderr.strip()}", flush=True)
        return None
    try:
        shutil.copytree(worktree / "fastyolo", tree / "fastyolo")
        shutil.copytree(worktree / "train", tree / "fastyolo" / "train")
        shutil.copytree(worktree / "kernels", tree / "fastyolo" / "kernels")
    finally:
        git("worktree", "remove", "--force", str(worktree))
    return tree


def run_bootstrap(side: Side, args: Sequence[str], cwd: Path, log: Path) -> tuple[int, str]:
    """BOOTSTRAP in a fresh interpreter of `side` (output to `log`); its exit status and output."""
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-c", BOOTSTRAP, *args], cwd=cwd, env=side.env, stdout=out,
                              stderr=subprocess.STDOUT)
    return done.returncode, log.read_text(errors="replace")


def imported_from(output: str) -> tuple[Path, Path] | None:
    """The folders of fastyolo and fastyolo.train that BOOTSTRAP reported importing."""
    for line in output.splitlines():
        if line.startswith(MARK):
            package, train = line[len(MARK):].split(" | fastyolo.train ")
            return Path(package).resolve().parent, Path(train).resolve().parent
    return None


def check_side(side: Side, output: str) -> str:
    """Stops unless the run imported side.package (and its train/); returns the proof line."""
    found = imported_from(output)
    if found is None or found[0] != side.package.resolve() or found[1] != side.train.resolve():
        raise SystemExit(f"train_speed: the {side.name} run imported fastyolo (and fastyolo.train) from {found}, "
                         f"not {side.package} ({side.train})")
    return f"fastyolo {found[0]}, fastyolo.train {found[1]}"


def prepare_side(side: Side, tmp: Path) -> None:
    """An untimed start: bytecode and numba kernels compiled, the imported fastyolo checked; reads the CLI's options."""
    code, output = run_bootstrap(side, ["prime"], tmp, tmp / f"prime-{side.name}.log")
    if code != 0:
        raise SystemExit(f"train_speed: the {side.name} code does not start:\n{_tail(output)}")
    print(f"  {side.name} code: {check_side(side, output)}", flush=True)
    _code, helped = run_bootstrap(side, ["cli", "train", "--help"], tmp, tmp / f"help-{side.name}.log")
    side.options = set(re.findall(r"--[a-z][a-z0-9-]*", helped))


def make_sides(tree: Path | None, tmp: Path) -> list[Side]:
    """after (this checkout, as imported here) and, with a baseline tree, before."""
    import fastyolo.train  # binds fastyolo too

    env = {k: v for k, v in os.environ.items() if k != "TRAIN_SPEED_ISOLATE"}
    sides = [Side("after", env, Path(fastyolo.__file__).parent, Path(fastyolo.train.__file__).parent)]
    if tree is not None:
        path = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH")) if p)
        before_env = {**env, "PYTHONPATH": path, "TRAIN_SPEED_ISOLATE": "1"}
        sides.insert(0, Side("before", before_env, tree / "fastyolo", tree / "fastyolo" / "train"))
    print("checking which code each side runs (an untimed start that also compiles its kernels)", flush=True)
    for side in sides:
        prepare_side(side, tmp)
    return sides


ABLATIONS = {"amp": ["--amp", "off"], "cache": ["--cache", "off"], "augment-on": ["--augment-on", "device"]}


def loop_variants(sides: list[Side], ablations: Sequence[str] = tuple(ABLATIONS)) -> list[tuple[str, Side, list[str]]]:
    """(label, side, extra options): before, after, and the after `ablations` its CLI offers."""
    variants = [(side.name, side, []) for side in sides]
    after = sides[-1]
    for name in ablations:
        option, value = ABLATIONS[name]
        if option in after.options:
            variants.append((f"after, {option} {value}", after, [option, value]))
    return variants


# metrics.jsonl seconds_<part>, where the code reports them; data_wait is the part of steps spent waiting for batches
EPOCH_PARTS = ("steps", "data_wait", "bn", "val", "map")


def epoch_parts(rows: list[dict[str, Any]]) -> str:
    """Median seconds of each part of an epoch (metrics.jsonl seconds_*), after the first epoch (warm-up)."""
    later = rows[1:] or rows
    found = [(part, [r[f"seconds_{part}"] for r in later if f"seconds_{part}" in r]) for part in EPOCH_PARTS]
    return ", ".join(f"{part} {statistics.median(values):.3f}" for part, values in found if values)


def loop_seconds(side: Side, extra: list[str], data: Path, backbone: str, device: str, epochs: int, batch: int,
                 tmp: Path, train_args: Sequence[str] = ()) -> tuple[float, float | None, str]:
    """Wall seconds of one whole `fastyolo train` run, the seconds its epochs reported (metrics.jsonl) and
    the median split of an epoch's seconds (epoch_parts; empty where the code does not report it)."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"loop-{side.name}-", dir=tmp))
    args = ["cli", "train", "--data", str(data), "--out", str(run_dir / "run"), "--backbone", backbone,
            "--epochs", str(epochs), "--batch", str(batch), "--device", device, "--val-split", str(VAL_SPLIT),
            "--seed", str(SEED), *train_args, *extra]
    if "--cache-dir" in side.options:
        args += ["--cache-dir", str(run_dir / "cache")]
    try:
        started = time.perf_counter()
        code, output = run_bootstrap(side, args, run_dir, run_dir / "log.txt")
        wall = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"exit {code}:\n{_tail(output)}")
        check_side(side, output)
        metrics = run_dir / "run" / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
        return wall, sum(row.get("seconds", 0.0) for row in rows) if rows else None, epoch_parts(rows)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def measure_loop(sides: list[Side], data: Path, n_train: int, backbone: str, device: str, epochs: int, batch: int,
                 rounds: int, tmp: Path, ablations: Sequence[str] = tuple(ABLATIONS),
                 train_args: Sequence[str] = ()) -> list[Row]:
    variants = loop_variants(sides, ablations)
    rates: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    inside: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    parts: dict[str, str] = {}
    failed: dict[str, str] = {}
    for r in range(rounds):  # before and after alternate, so a drifting machine affects both alike
        for label, side, extra in variants:
            if label in failed:
                continue
            print(f"[loop] {device} {backbone}: fastyolo train ({label}), {epochs} epochs, batch {batch} "
                  f"(round {r + 1}/{rounds})", flush=True)
            try:
                wall, in_epochs, parts[label] = loop_seconds(side, extra, data, backbone, device, epochs, batch, tmp,
                                                             train_args)
            except RuntimeError as exc:
                print(f"  {label} failed: {exc}", flush=True)
                failed[label] = str(exc).splitlines()[0]
                continue
            rates[label].append(epochs * n_train / wall)
            if in_epochs is not None:
                inside[label].append(in_epochs)
            print(f"  {wall:.1f} s wall, {epochs * n_train / wall:.2f} img/s"
                  + (f"; an epoch's seconds: {parts[label]}" if parts[label] else ""), flush=True)
    rows = []
    for label, _, _ in variants:
        what = f"whole loop, {label}"
        if not rates[label]:
            rows.append(Row(device, backbone, "loop", what, None, note=f"failed: {failed.get(label, '')}"))
            continue
        note = f"{epochs} epochs x {n_train} frames"
        if inside[label]:
            note += f"; epochs {statistics.median(inside[label]):.1f} s of the wall time"
        rows.append(Row(device, backbone, "loop", what, statistics.median(rates[label]), None, rates[label], note))
        if inside[label]:
            # What a long run converges to: the epochs' own seconds (steps, BatchNorm pass, validation) without
            # the start-up (imports, CUDA, frame cache) and exit that a 5-epoch run cannot amortise.
            epoch_rates = [epochs * n_train / t for t in inside[label]]
            split = f"; an epoch (last round, median after the first): {parts[label]} s" if parts.get(label) else ""
            rows.append(Row(device, backbone, "loop", f"epochs of the loop, {label}", statistics.median(epoch_rates),
                            None, epoch_rates, f"metrics.jsonl seconds: start-up, cache build and exit excluded{split}"))
    return rows


def ratio_line(rows: list[Row], backbone: str, device: str) -> str | None:
    found = {r.what: r.images_per_s for r in rows if r.kind == "loop" and r.backbone == backbone and r.device == device}
    before, after = found.get("whole loop, before"), found.get("whole loop, after")
    if not before or not after:
        return None
    return (f"whole loop {backbone} {device}: before {before:.2f} img/s, after {after:.2f} img/s, "
            f"ratio {after / before:.2f}x")


# ---------------------------------------------------------------- output


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n== {title} ==")
    width = max(len(r.what) for r in rows)
    print(f"{'what':<{width}}  {'images/s':>9}  {'ms/step':>9}  note")
    for r in rows:
        ms = "-" if r.ms_per_step is None else fmt(r.ms_per_step, 1)
        print(f"{r.what:<{width}}  {fmt(r.images_per_s, 2):>9}  {ms:>9}  {r.note}")


def report(rows: list[Row], devices: Sequence[str], backbones: Sequence[str], batches: dict[str, int]) -> None:
    for device in devices:
        data_rows = [r for r in rows if r.device == device and r.backbone is None]
        if data_rows:
            print_table(f"{device}: data pipeline, batch {batches[device]}", data_rows)
        for backbone in backbones:
            mine = [r for r in rows if r.device == device and r.backbone == backbone]
            if mine:
                print_table(f"{device}: {backbone}, batch {batches[device]}", mine)
    lines = [line for device in devices for backbone in backbones if (line := ratio_line(rows, backbone, device))]
    if lines:
        print()
        print("\n".join(lines))


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled frames [../shared/data/kitti_tiny]")
    p.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"], choices=BACKBONES,
                   help="[resnet18 resnet50]")
    p.add_argument("--devices", nargs="+", choices=("cpu", "cuda"),
                   help="[cpu, and cuda when torch sees a GPU]")
    p.add_argument("--batch", type=int, help="images per step [16 on cpu, 64 on cuda]")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the whole loop and of the data pipeline [5]")
    p.add_argument("--steps", type=int, default=10, help=f"timed training steps, after {WARMUP_STEPS} warm-up [10]")
    p.add_argument("--rounds", type=int, default=1, help="repeat every measurement; tables show medians [1]")
    p.add_argument("--before", default=BEFORE_REV,
                   help="git revision of the code before the speed work; 'none' skips the before runs [%(default).10s]")
    p.add_argument("--only", nargs="+", action="extend", choices=KINDS, help="measure only these [all]")
    p.add_argument("--json", type=Path, help="write every row here")
    p.add_argument("--ablations", nargs="+", choices=(*ABLATIONS, "none"), default=list(ABLATIONS),
                   help="whole-loop runs of the after code with one default changed: --amp off, --cache off, "
                        "--augment-on device [all]")
    p.add_argument("--precisions", nargs="+", choices=tuple(STEP_PRECISIONS), default=list(STEP_PRECISIONS),
                   help="the steps' precisions (fp16: CUDA only) [all]")
    p.add_argument("--compile", action="store_true",
                   help="also time the channels_last steps through torch.compile (first step: the compilation)")
    p.add_argument("--train-args", type=shlex.split, default=[],
                   help="more `fastyolo train` options for every whole-loop run, both sides (e.g. '--eval-every 5')")
    p.add_argument("--repeat", type=int, default=1,
                   help="list every frame of --data this many times (e.g. 14: 1,050 kitti_tiny frames) [1]")
    args = p.parse_args(argv)
    if min(args.epochs, args.steps, args.rounds) < 1 or args.batch is not None and args.batch < 1:
        p.error("--epochs, --steps, --rounds and --batch must be at least 1")
    if args.devices is None:
        args.devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    if "cuda" in args.devices and not torch.cuda.is_available():
        p.error("--devices cuda: torch sees no CUDA GPU")
    args.only = list(dict.fromkeys(args.only or KINDS))
    args.ablations = [a for a in dict.fromkeys(args.ablations) if a != "none"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repeat_dir = None
    if args.repeat > 1:
        repeat_dir = tempfile.TemporaryDirectory(prefix="train_speed-data-")
        args.data = repeated_dataset(args.data, args.repeat, Path(repeat_dir.name))
    train = load_train_frames(args.data)
    batches = {d: args.batch or (64 if d == "cuda" else 16) for d in args.devices}
    print_header(args.devices)
    print(f"data: {args.data} ({len(train)} training frames after --val-split {VAL_SPLIT}); "
          f"measuring {', '.join(args.only)}", flush=True)
    rows: list[Row] = []
    machine = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_bf16": cpu_bf16(), "torch": torch.__version__,
               "isa_caps": isa_caps(), "threads": torch.get_num_threads(), "before": args.before,
               "cuda": torch.cuda.get_device_name() if "cuda" in args.devices else None}
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("data", "json")}

    def save() -> None:
        """Every row so far to --json: a run cut short (a time limit) keeps what it measured."""
        if args.json:
            args.json.write_text(json.dumps({"machine": machine, "settings": settings | {"batches": batches},
                                             "rows": [asdict(r) for r in rows]}, indent=1) + "\n")

    with tempfile.TemporaryDirectory(prefix="train_speed-") as name:
        tmp = Path(name)
        if args.compile:  # torch.compile's first step timed from an empty cache, not from an earlier run's
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")
        sides = []
        if "loop" in args.only:
            sides = make_sides(before_tree(args.before, tmp), tmp)
        for device in args.devices:
            dev = torch.device(device)
            if "data" in args.only:
                rows += measure_data(train, dev, batches[device], args.epochs, args.rounds, tmp)
                save()
            for backbone in args.backbones:
                if "step" in args.only:
                    rows += measure_step(train, backbone, dev, batches[device], args.steps, args.rounds, args.compile,
                                         args.precisions)
                    save()
                if "loop" in args.only:
                    rows += measure_loop(sides, args.data, len(train), backbone, device, args.epochs,
                                         batches[device], args.rounds, tmp, args.ablations, args.train_args)
                    save()
    report(rows, args.devices, args.backbones, batches)
    if args.json:
        save()
        print(f"\nrows written to {args.json}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
