"""The training loop: epochs of SGD/AdamW on the YOLO loss, validation loss and mAP, checkpoints, resume, DDP.

One process trains on one device. Under `torchrun --nproc-per-node K` every process trains on its
share of each epoch (DistributedSampler) through DistributedDataParallel; rank 0 alone validates,
prints and writes files. Resume is exact for one process: model, optimizer, schedule, epoch, the
batch reached inside an interrupted epoch and the torch random state are all in last.pt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from fastyolo.train.cache import FrameCache, build_cache
from fastyolo.train.checkpoint import (
    load_checkpoint,
    load_weights,
    read_torch_file,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_failed,
)
from fastyolo.train.config import AMP_MODES, AUGMENT_ON, TrainConfig
from fastyolo.train.data import EpochBatches, YoloDataset, sampling_weights
from fastyolo.train.device_augment import DeviceAugmenter
from fastyolo.train.loss import yolo_loss
from fastyolo.train.model import YoloNet
from fastyolo.train.schedule import make_optimizer, make_scheduler
from torch.utils.data import DataLoader
from tqdm import tqdm

from fastyolo.datasets import Sample
from fastyolo.detections import Detections
from fastyolo.errors import FastYoloError, ModelError, OutputError
from fastyolo.preprocess import NORMALIZE_SCALE, NORMALIZE_SHIFT

EVAL_CONF = 0.01  # keep low-score boxes: mAP integrates over every threshold
EVAL_IOU = 0.45  # NMS threshold, the Detector's default
EVAL_TOP_K = 100
CONF_PRIOR = 0.01  # initial box confidence, see set_confidence_prior
LOSS_PARTS = ("box", "obj", "noobj", "cls")
BN_FRAMES = 256  # training frames that set the BatchNorm statistics after each epoch
REPORT_EVERY = 0.5  # seconds between reads of the running loss (each one waits for the GPU)
PLOT_EVERY = 30.0  # seconds between redraws of curves.png (and always after the last epoch)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Distributed:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, ddp: Distributed) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FastYoloError("--device cuda but torch sees no CUDA GPU: use --device cpu (or auto)")
        return torch.device("cuda", ddp.local_rank if ddp.world_size > 1 else torch.cuda.current_device())
    if name != "cpu":
        raise FastYoloError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device("cpu")


def split_samples(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """A seeded random split into (train, val) with round(fraction * n) validation frames."""
    if not 0.0 <= fraction < 1.0:
        raise FastYoloError(f"--val-split must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = round(fraction * len(samples))
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [samples[i] for i in train], [samples[i] for i in val]


class _StopFlag:
    """Ctrl-C (or SIGTERM: kill, timeout, a scheduler) sets a flag that the loop checks between
    batches, so last.pt is written at a clean point and never torn mid-step.

    A second signal interrupts at once (the default handlers are back by then).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.stop = False
        self.signum = signal.SIGINT
        self._previous: dict[int, Any] = {}

    def interrupt(self) -> KeyboardInterrupt:
        """What to raise once stopped: the CLI exits 130 after Ctrl-C, 143 after SIGTERM."""
        from fastyolo.fileio import Terminated

        return Terminated() if self.signum == signal.SIGTERM else KeyboardInterrupt()

    def __enter__(self):
        try:
            self._previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        except ValueError:  # not the main thread: keep the default behaviour
            self._previous = {}
        return self

    def _handler(self, signum, frame):
        self.stop, self.signum = True, signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: finishing this batch, then saving last.pt (again to abort at once)", flush=True)
        self._restore()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def __exit__(self, *exc):
        self._restore()
        return False


@dataclass(frozen=True)
class Precision:
    """How the network runs in training: autocast dtype (None: fp32) and memory format."""

    dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    @property
    def name(self) -> str:
        text = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        return text + (", channels_last" if self.channels_last else "")


def onednn_isa_cap() -> str | None:
    """The instruction-set cap oneDNN reads at its first use (ONEDNN_MAX_CPU_ISA, else the older
    DNNL_MAX_CPU_ISA), upper-cased; None when unset or ALL/DEFAULT (no cap)."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return None if cap in ("", "ALL", "DEFAULT") else cap


def cpu_has_amx() -> bool:
    """AMX tiles that oneDNN's convolutions may use: the CPU has them and no ISA cap stops below them.
    A cap is how a CPU without AMX is imitated (bench/RESULTS.md); under one, bf16 convolutions fall back
    to AVX-512 BF16 or to emulation, and a bf16 ResNet-18 step then ran 0.63x / 0.35x as fast as fp32's."""
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if not (is_amx and is_amx()):
        return False
    cap = onednn_isa_cap()
    return cap is None or "AMX" in cap


def pick_precision(amp: str, channels_last: bool | None, device: torch.device) -> Precision:
    """Resolve --amp / channels_last for the device. auto: bf16 on CUDA GPUs that have it (fp16 with
    loss scaling on older ones) and on CPUs with AMX (bench/train_speed.py: a 2-3x faster step);
    fp32 on other CPUs, where bf16 is emulated. channels_last (None: on) is the layout the oneDNN and
    cuDNN convolutions run natively: on a 2-core Xeon it made the ResNet-18 step 1.23x faster in fp32
    and 1.54x in bf16."""
    if amp not in AMP_MODES:
        raise FastYoloError(f"unknown --amp {amp!r}: choose one of {', '.join(AMP_MODES)}")
    if amp == "auto":
        if device.type == "cuda":
            # Native bf16 only (Ampere and later); older GPUs emulate it slowly: fp16 with loss scaling there.
            amp = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        else:
            amp = "bf16" if cpu_has_amx() else "off"
    if amp == "fp16" and device.type != "cuda":
        raise FastYoloError("--amp fp16 needs a CUDA device (on a CPU use bf16 or off)")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    return Precision(dtype, True if channels_last is None else channels_last)


def pick_augment_on(setting: str, augment: bool, cached: bool) -> str:
    """Resolve --augment-on: "workers" or "device". auto is workers: augmenting on a GPU was written but not yet
    measured against the workers there (bench/train_speed.py measures both), and on a CPU the workers run
    beside the step while the device version runs in its place."""
    if setting not in AUGMENT_ON:
        raise FastYoloError(f"unknown --augment-on {setting!r}: choose one of {', '.join(AUGMENT_ON)}")
    if setting == "device" and augment and not cached:
        raise FastYoloError("--augment-on device warps the frame cache's copies: drop --cache off")
    return "device" if setting == "device" and augment else "workers"


_SCALE = torch.from_numpy(NORMALIZE_SCALE).view(1, 3, 1, 1)
_SHIFT = torch.from_numpy(NORMALIZE_SHIFT).view(1, 3, 1, 1)


@functools.cache
def _normalizer(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """NORMALIZE_SCALE and NORMALIZE_SHIFT on `device`, copied there once."""
    return _SCALE.to(device), _SHIFT.to(device)


def to_network_input(pixels: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB on any device -> (N, 3, H, W) float32 normalised as fastyolo.preprocess.normalize
    does (the same float32 multiply, then add), so the host ships a quarter of the bytes."""
    x = pixels.permute(0, 3, 1, 2).float()
    scale, shift = _normalizer(x.device)
    x = x * scale + shift
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _batch_to(device: torch.device, batch, channels_last: bool = False,
              augmenter: DeviceAugmenter | None = None) -> tuple[torch.Tensor, ...]:
    """A DataLoader batch as the step takes it: network input, target boxes, mask and classes on `device`.
    Items augmented on the device (an empty image) get their pixels from `augmenter`."""
    pixels = batch[0]
    if pixels.ndim == 2:  # (N, 0): the workers sent draws, not pixels
        if augmenter is None:
            raise RuntimeError("a batch augmented on the device reached _batch_to without its DeviceAugmenter")
        pixels = augmenter(batch[6])
    boxes, mask, classes = (t.to(device, non_blocking=True) for t in batch[1:4])
    return to_network_input(pixels.to(device, non_blocking=True), channels_last), boxes, mask, classes


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device,
            precision: Precision = Precision(), box_loss: str = "sse") -> tuple[np.ndarray, dict[str, float]]:
    """Network outputs (N, S, S, CELL_SIZE) for the loader's frames, in order, and the mean loss parts."""
    model.eval()
    grids, sums, count = [], dict.fromkeys(("loss", *LOSS_PARTS), 0.0), 0
    for batch in loader:
        images, boxes, mask, classes = _batch_to(device, batch, precision.channels_last)
        with precision.autocast(device):
            out = model(images).float()
        loss, parts = yolo_loss(out, boxes, mask, classes, box_loss=box_loss)
        n = images.shape[0]
        sums["loss"] += float(loss.detach()) * n
        for k in LOSS_PARTS:
            sums[k] += float(parts[k]) * n
        count += n
        grids.append(out.float().cpu().numpy())
    return np.concatenate(grids), {k: v / max(count, 1) for k, v in sums.items()}


def detections_from_grids(grids: np.ndarray, sizes: np.ndarray, conf: float = EVAL_CONF) -> list[Detections]:
    """Decode + NMS exactly as the Detector does (the numba kernel), one Detections per frame."""
    from fastyolo.kernels import decode_nms_batch

    boxes, scores, classes, counts = decode_nms_batch(grids, sizes, conf, EVAL_IOU, EVAL_TOP_K)
    return [Detections(boxes[i, :c].copy(), scores[i, :c].copy(), classes[i, :c].copy()) for i, c in enumerate(counts)]


def evaluate_grids(grids: np.ndarray, samples: Sequence[Sample], min_size: float = 0.0) -> dict[str, Any]:
    """mAP (fastyolo.metrics.evaluate) of decoded network outputs against the samples' boxes."""
    from fastyolo.metrics import evaluate

    sizes = np.array([(s.width, s.height) for s in samples], dtype=np.float64)
    return evaluate(detections_from_grids(grids, sizes), list(samples), min_size=min_size)


# Runtimes whose threads make worker processes unsafe (see safe_workers). onnxruntime is not one: a process that
# had run it took 200 signals to a Python handler unharmed, where one that had run OpenVINO (fp32 or bf16) crashed.
INFERENCE_RUNTIMES = ("openvino",)


def safe_workers(workers: int, say: Callable[[str], None] = print) -> int:
    """`workers`, or 0 in a process that has loaded an inference runtime (a notebook that detected, then trains).

    There worker processes are unsafe: after OpenVINO bf16 inference, a Python SIGCHLD handler (the one a
    DataLoader with workers installs) plus child processes exiting crashed the process with SIGSEGV (3 of 3
    runs; 0 of 3 with SIGCHLD left at its default), and batches from forked workers came back with garbage
    floats (1 of 8 runs). `fastyolo train` loads neither runtime and keeps its workers.
    """
    loaded = [name for name in INFERENCE_RUNTIMES if name in sys.modules]
    if workers and loaded:
        say(f"{', '.join(loaded)} loaded in this process, where DataLoader worker processes crash it: "
            "reading batches in this process instead (run training in its own process for --workers)")
        return 0
    return workers


def _loader(dataset: YoloDataset, batch: int, workers: int, device: torch.device,
            batches: EpochBatches | None = None) -> DataLoader:
    """The DataLoader of training (`batches`: its epochs' batches) and of validation and the BatchNorm pass
    (in order, `batch` at a time); `workers` as safe_workers allows."""
    workers = safe_workers(workers, say=lambda _msg: None)
    if workers:
        # A worker forked while OpenCV's thread pool exists can hang for good in its first warpAffine (seen: a
        # 25-epoch run stuck an hour in epoch 1); unthreaded OpenCV, inherited by the forks, never touches it.
        cv2.setNumThreads(0)
    cut = {"batch_sampler": batches} if batches is not None else {"batch_size": batch, "shuffle": False}
    return DataLoader(
        dataset,
        **cut,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # Seeds the workers' base seed; a fixed generator keeps the global torch RNG (dropout) untouched.
        generator=torch.Generator().manual_seed(0),
        # Workers live for the whole run: starting them every epoch cost more than a small epoch's steps.
        persistent_workers=workers > 0,
    )


def recalibrate_batchnorm(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                          precision: Precision = Precision()) -> None:
    """Recompute every BatchNorm's running statistics as the exact average over `loader`'s frames.

    Training normalises with each batch's statistics, inference with the running averages; while
    the weights move fast the exponential average lags them, and a model that fits its training
    batches did not fit them in eval mode (the overfit once needed frozen BatchNorm for that).
    Averaging over un-augmented training frames at the current weights closes that gap (Detectron2's
    "precise BN"). The training step itself never reads these statistics, so training is unchanged.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches that follow
    model.train()
    # Train-mode dropout would draw from the global RNG: a run that made one pass more (a stop, then resume)
    # would then train on other random numbers than one that did not.
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        for batch in loader:
            with precision.autocast(device):
                model(_batch_to(device, batch, precision.channels_last)[0])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def calibration_subset(count: int, limit: int = BN_FRAMES) -> list[int]:
    """Indices of up to `limit` frames spread evenly over `count` training frames, in a fixed order."""
    if count <= limit:
        return list(range(count))
    return np.linspace(0, count - 1, limit).round().astype(int).tolist()


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl and metrics.csv, rewritten whole after each epoch (the checkpoint holds the same list)."""
    _replace_text(out / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    keys = list(dict.fromkeys(k for row in history for k in row))
    lines = [",".join(keys)] + [",".join("" if row.get(k) is None else f"{row[k]}" for k in keys) for row in history]
    _replace_text(out / "metrics.csv", "\n".join(lines) + "\n")


def _replace_text(path: Path, text: str) -> None:
    """`path` written whole or not at all (a temporary file, then renamed); a failed write is one OutputError."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, exc) from None


class RunWriteError(OutputError):
    """A file of the run folder could not be written (a full disk): the run stops, every earlier file kept."""


@contextlib.contextmanager
def _stop_on_failed_write(out: Path) -> Iterator[None]:
    """A run-folder write that fails ends the run in one line that says how to go on. Every file is written
    whole or not at all (a temporary file, then renamed), so the earlier last.pt and best.pt stay as they were."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, RunWriteError):
            raise
        then = "continue with --resume" if (out / "last.pt").is_file() else "start again (no last.pt was written yet)"
        raise RunWriteError(f"{exc}. Make room, then {then}") from None


def fit(
    config: TrainConfig,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    *,
    resume: bool = False,
    stop_after: int | None = None,
    target_map: float | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train, validating every `eval_every` epochs; returns the per-epoch history.

    Writes OUT/last.pt (full state: every `checkpoint_every` seconds at an epoch's end, after the
    last epoch, and on Ctrl-C/SIGTERM), OUT/best.pt (best validation mAP@0.5), OUT/metrics.jsonl|csv
    (every epoch) and OUT/curves.png (every PLOT_EVERY seconds and at the end). `stop_after=k`
    ends cleanly after epoch k, as an interrupted run would (resume it with resume=True);
    `target_map` ends the run once the validation mAP@0.5 reaches it.
    """
    ddp = init_distributed(config.device)
    run = _Run(config, train_samples, val_samples, ddp, resume, log if ddp.main else (lambda _msg: None))
    with _StopFlag() as flag:
        for epoch in range(run.start_epoch, config.epochs):
            started = time.perf_counter()
            sums = run.train_epoch(epoch, flag)
            row = run.end_epoch(epoch, sums, started)
            if stop_after is not None and epoch + 1 >= stop_after:
                break
            reached = row.get("val_map50")
            if target_map is not None and reached is not None and reached >= target_map:
                run.say(f"{config.val_name} mAP@0.5 {reached:.3f} >= {target_map}: stopping after epoch {epoch + 1}")
                break
            if _should_stop(flag.stop, ddp, run.device):  # a signal during validation: stop at this epoch's end
                run.finish()
                run.say(f"interrupted after epoch {epoch + 1}: saved {run.out / 'last.pt'}; continue with --resume")
                raise flag.interrupt()
        run.finish()
    run.close()
    if ddp.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return run.history


class _Run:
    """One training run's state: model, optimizer, schedule, loaders, history; an epoch at a time."""

    def __init__(self, config: TrainConfig, train_samples: Sequence[Sample], val_samples: Sequence[Sample],
                 ddp: Distributed, resume: bool, say: Callable[[str], None]):
        self.config, self.ddp, self.say, self.val_samples = config, ddp, say, val_samples
        if ddp.main and len(val_samples):
            from fastyolo.metrics import require_coco_eval

            require_coco_eval()  # now, not after the frames are decoded and an epoch trained
        self.device = device = pick_device(config.device, ddp)
        self.out = Path(config.out)
        if ddp.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.precision = pick_precision(config.amp, config.channels_last, device)
        self.model = model = self._build_model(resume)
        if self.precision.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(model, config.optimizer, config.lr)
        # fp16 needs loss scaling (its gradients underflow); bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.dtype == torch.float16)
        on_device = pick_augment_on(config.augment_on, config.augment, config.cache != "off") == "device"
        weights = sampling_weights(train_samples, config, self.say)  # --source-weights, --class-balance (None: off)
        train_cache, val_cache = self._build_caches(train_samples, val_samples)
        self.augmenter = DeviceAugmenter(train_cache.large, device) if on_device else None
        self.train_set = YoloDataset(train_samples, augment=config.augment, seed=config.seed, aspect=config.aspect,
                                     cache=train_cache, augment_on_device=on_device, mosaic=config.mosaic,
                                     zoom=config.zoom, partners=weights, cell_order=config.cell_order)
        self.batches = EpochBatches(len(self.train_set), config.batch, seed=config.seed, rank=ddp.rank,
                                    world_size=ddp.world_size, weights=weights)
        self.steps_per_epoch = self.batches.per_epoch
        # The last epochs see the frames as inference will: the network settles on the real distribution.
        self.augment_until = config.epochs - round(config.clean_tail * config.epochs) if config.augment else 0
        self.scheduler = make_scheduler(self.optimizer, config.epochs * self.steps_per_epoch, config.warmup,
                                        config.milestones)
        self.start_epoch, self.skip_batches, self.history, self.best_map = 0, 0, [], -1.0
        self.partial: dict[str, float] = {}
        if resume:
            self._resume()
        self.batches.plan(((e, e < self.augment_until) for e in range(self.start_epoch, config.epochs)),
                          skip=self.skip_batches)
        self._stream: Iterator | None = None  # one iteration of self.loader for the whole run
        self.net = model
        if ddp.world_size > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        safe_workers(config.workers, self.say)  # says so once if the loaders below must read in this process
        val_set = YoloDataset(val_samples, augment=False, cache=val_cache)
        # Cached un-augmented frames are a copy each: worker processes would cost more than they save.
        val_workers = 0 if val_cache is not None else config.workers
        self.val_loader = _loader(val_set, config.batch, val_workers, device) if ddp.main and len(val_set) else None
        self.loader = _loader(self.train_set, config.batch, config.workers, device, self.batches)
        rows = calibration_subset(len(train_samples))
        bn_set = YoloDataset([train_samples[i] for i in rows], augment=False, cache=train_cache, rows=rows)
        bn_workers = 0 if train_cache is not None else config.workers
        self.bn_loader = _loader(bn_set, config.batch, bn_workers, device) if config.precise_bn else None
        self.frozen_from = round(config.freeze_bn * config.epochs)  # from this epoch on, eval-mode BatchNorm
        self.bn_current = False  # the statistics were computed at the current weights (refresh_batchnorm)
        self.last_saved = self.last_plotted = time.monotonic()
        self.say(f"training on {device.type} in {self.precision.name}; frames "
                 + ("decoded each step" if train_cache is None else
                    f"cached ({'memory' if train_cache.path is None else train_cache.path})")
                 + ("" if self.augmenter is None else f"; augmented on the {device.type} ({self.augmenter.where})"))

    def _build_caches(self, train_samples: Sequence[Sample],
                      val_samples: Sequence[Sample]) -> tuple[FrameCache | None, FrameCache | None]:
        """Every process decodes its frames once; validation frames only for the process that validates."""
        config = self.config
        options = {"mode": config.cache, "cache_dir": config.cache_dir, "log": self.say}
        train_cache = build_cache(train_samples, large=config.augment, **options)
        if not self.ddp.main:
            return train_cache, None
        same = len(val_samples) == len(train_samples) and all(
            v is t for v, t in zip(val_samples, train_samples, strict=True))
        if same:  # validating on the training frames (--val-split 0): decoded already
            return train_cache, train_cache
        return train_cache, build_cache(val_samples, large=False, **options)

    def _build_model(self, resume: bool) -> YoloNet:
        config = self.config
        torch.manual_seed(config.seed)
        model = YoloNet(config.backbone, head=config.head, dropout=config.dropout)
        set_confidence_prior(model, CONF_PRIOR)
        pretrained = resolve_pretrained(config.pretrained, config.backbone)
        if pretrained and not resume:
            load_pretrained(model, pretrained)
            self.say(f"{config.backbone}: ImageNet weights from {pretrained}")
        if config.init and not resume:
            start = load_checkpoint(config.init)
            if start["backbone"] != config.backbone:
                raise FastYoloError(f"--init {config.init} holds a {start['backbone']}: pass --backbone {start['backbone']}")
            load_weights(model, start, config.init)
        return model.to(self.device)

    def _resume(self) -> None:
        state = load_checkpoint(self.out / "last.pt")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch, self.skip_batches = state["epoch"], state["batches_done"]
        self.history, self.best_map, self.partial = state["history"], state["best_map"], state.get("partial", {})
        set_rng_state(state["rng"])
        self.say(f"resuming {self.out / 'last.pt'}: epoch {self.start_epoch + 1}/{self.config.epochs}, "
                 f"batch {self.skip_batches}/{self.steps_per_epoch}")

    def save_last(self, epoch: int, batches_done: int, sums: dict[str, float]) -> None:
        save_checkpoint(
            self.out / "last.pt", self.model,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(), epoch=epoch,
            batches_done=batches_done, partial=sums, history=self.history, best_map=self.best_map,
            rng=rng_state(), config=dataclasses.asdict(self.config),
        )

    def train_epoch(self, epoch: int, flag: _StopFlag) -> dict[str, float]:
        """One epoch of steps (the rest of it, when resumed mid-epoch); returns the summed losses and the
        seconds the steps waited for their batches ("data_wait")."""
        config = self.config
        if self._stream is None:
            self._stream = iter(self.loader)  # the batches of every epoch from here on (EpochBatches.plan)
        sums = dict(self.partial) or {k: 0.0 for k in ("loss", *LOSS_PARTS, "images", "dropped")}
        sums["data_wait"] = 0.0
        # Summed on the device and read every REPORT_EVERY seconds: a read per step stalls a GPU.
        running = torch.zeros(len(LOSS_PARTS) + 1, device=self.device, dtype=torch.float64)
        self.net.train()
        if epoch >= self.frozen_from:
            # Train the network exactly as it will run (eval-mode BatchNorm).
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        bar = tqdm(range(self.skip_batches, self.steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   total=self.steps_per_epoch, initial=self.skip_batches, disable=not self.ddp.main, leave=False,
                   dynamic_ncols=True)
        batches_done, reported = self.skip_batches, time.monotonic()
        for _ in bar:
            asked = time.perf_counter()
            batch = next(self._stream)
            sums["data_wait"] += time.perf_counter() - asked
            self._step(batch, running, sums)
            batches_done += 1
            if time.monotonic() - reported > REPORT_EVERY or batches_done == self.steps_per_epoch:
                self._read_running(running, sums, epoch)
                bar.set_postfix(loss=f"{sums['loss'] / sums['images']:.3f}",
                                lr=f"{self.scheduler.get_last_lr()[0]:.1e}")
                reported = time.monotonic()
            if _should_stop(flag.stop, self.ddp, self.device):
                bar.close()
                self._read_running(running, sums, epoch)
                if self.ddp.main:
                    with _stop_on_failed_write(self.out):
                        self.save_last(epoch, batches_done, sums)
                    self.say(f"interrupted in epoch {epoch + 1}: saved {self.out / 'last.pt'}; continue with --resume")
                raise flag.interrupt()
        bar.close()
        self._read_running(running, sums, epoch)
        self.skip_batches, self.partial = 0, {}
        return sums

    def _step(self, batch, running: torch.Tensor, sums: dict[str, float]) -> None:
        images, boxes, mask, classes = _batch_to(self.device, batch, self.precision.channels_last, self.augmenter)
        with self.precision.autocast(self.device):
            out = self.net(images)
        # the loss in fp32, whatever the autocast
        loss, parts = yolo_loss(out.float(), boxes, mask, classes, box_loss=self.config.box_loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        n = images.shape[0]
        running += torch.stack([loss.detach(), *(parts[k].detach() for k in LOSS_PARTS)]).double() * n
        sums["images"] += n
        sums["dropped"] += float(batch[5].sum())

    def _read_running(self, running: torch.Tensor, sums: dict[str, float], epoch: int) -> None:
        """Move the device-side loss sums into `sums`; a non-finite loss stops the run with advice."""
        values = running.tolist()
        running.zero_()
        if not all(math.isfinite(v) for v in values):
            lr = self.scheduler.get_last_lr()[0]
            raise FastYoloError(f"loss became {values[0]} in epoch {epoch + 1}: lower --lr (now {lr:.2e})")
        for k, v in zip(("loss", *LOSS_PARTS), values, strict=True):
            sums[k] += v

    def end_epoch(self, epoch: int, sums: dict[str, float], started: float) -> dict[str, Any]:
        """BatchNorm statistics, validation, checkpoints, metrics and curves after an epoch; returns its row."""
        config = self.config
        # Where an epoch's time goes (metrics.jsonl seconds_*): the steps (train_epoch ends with a read of the
        # loss, which waits for the device), the BatchNorm pass, validation's forward passes, its mAP; and of
        # the steps' seconds, how long they waited for batches (seconds_data_wait: the input side's share).
        clock = {"steps": time.perf_counter()}
        validates = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        if epoch < self.frozen_from:
            self.bn_current = False  # the weights moved
            # Only validation, the run's end and the epochs with frozen BatchNorm read the statistics (the
            # training step does not): with --eval-every N the pass runs every N epochs, not every epoch.
            if self.bn_loader is not None and (validates or epoch + 1 in (self.frozen_from, config.epochs)):
                self.refresh_batchnorm()
                clock["bn"] = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.scheduler.get_last_lr()[0]}
        images_seen = max(sums["images"], 1.0)
        row.update({f"train_{k}": sums[k] / images_seen for k in ("loss", *LOSS_PARTS)})
        row["dropped_objects"] = int(sums["dropped"])
        row["train_images"] = int(sums["images"])  # this process's share under DDP
        row["processes"] = self.ddp.world_size
        if self.val_loader is not None and validates:
            grids, val_loss = predict(self.model, self.val_loader, self.device, self.precision,
                                       self.config.box_loss)
            clock["val"] = time.perf_counter()
            metrics = evaluate_grids(grids, self.val_samples, config.min_size)
            clock["map"] = time.perf_counter()
            row.update({f"val_{k}": v for k, v in val_loss.items()})
            row["val_map50"] = metrics["map50"]
            row["val_map50_95"] = metrics["map50_95"]
        row["seconds"] = round(time.perf_counter() - started, 2)
        previous = started
        for part, at in clock.items():
            row[f"seconds_{part}"] = round(at - previous, 3)
            previous = at
        row["seconds_data_wait"] = round(sums["data_wait"], 3)
        self.history.append(row)
        if self.ddp.main:
            with _stop_on_failed_write(self.out):
                current = row.get("val_map50")
                if current is not None and current > self.best_map:
                    save_checkpoint(self.out / "best.pt", self.model, epoch=epoch + 1, metrics=row,
                                    config=dataclasses.asdict(config))
                    self.best_map = current  # once written: a failed write leaves the earlier best the best
                now = time.monotonic()
                # last.pt holds the optimizer too (3x the model): written every checkpoint_every seconds, not
                # every epoch; fit writes it after the last epoch, and a signal writes it at once.
                if now - self.last_saved >= config.checkpoint_every:
                    self.save_last(epoch + 1, 0, {})
                    self.last_saved = now
                _write_history(self.out, self.history)
                if now - self.last_plotted >= PLOT_EVERY:
                    self.plot()
                    self.last_plotted = now
            self.say(_summary(row, config))
        return row

    def refresh_batchnorm(self) -> None:
        """BatchNorm statistics for the current weights (precise BN), unless they already are."""
        if self.bn_loader is None or self.bn_current:
            return
        recalibrate_batchnorm(self.model, self.bn_loader, self.device, self.precision)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.bn_current = True

    def plot(self) -> None:
        from fastyolo.train.plots import plot_curves

        try:
            plot_curves(self.history, self.out / "curves.png", self.config.val_name)
        except OSError as exc:
            raise write_failed(self.out / "curves.png", exc) from None

    def close(self) -> None:
        """Stop the persistent DataLoader workers now. Left to garbage collection, their shutdown ran
        at interpreter exit or at a later gc pass and took 1-10 s (measured) after training was done."""
        for loader in (self.loader, self.val_loader, self.bn_loader):
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
                loader._iterator = None

    def finish(self) -> None:
        """After the last epoch run (the end, --stop-after, the target mAP): last.pt and curves.png current."""
        if self.ddp.main and self.history:
            if self.history[-1]["epoch"] <= self.frozen_from:  # a --stop-after between passes: last.pt exact too
                self.refresh_batchnorm()
            with _stop_on_failed_write(self.out):
                self.save_last(self.history[-1]["epoch"], 0, {})
                self.plot()


def set_confidence_prior(model: YoloNet, prior: float) -> None:
    """Start every box confidence at `prior` instead of 0.5 (the output bias set to logit(prior)).

    With 0.5 the no-object term (242 boxes per image) drives the confidences' logits deep into the
    sigmoid's flat tail in the first steps (Adam keeps stepping while the gradient vanishes); a box
    that later becomes responsible then gets no gradient and never lights up. RetinaNet's prior
    initialisation for the same reason.
    """
    with torch.no_grad():
        model.confidence_bias()[...] = math.log(prior / (1.0 - prior))


def _should_stop(flag: bool, ddp: Distributed, device: torch.device) -> bool:
    """Every rank stops at the same batch: a Ctrl-C seen by any rank stops them all."""
    if ddp.world_size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _summary(row: dict[str, Any], config: TrainConfig) -> str:
    text = f"epoch {row['epoch']}/{config.epochs}: train loss {row['train_loss']:.4f}"
    v = config.val_name
    if "val_loss" in row:
        text += f", {v} loss {row['val_loss']:.4f}, {v} mAP@0.5 {row['val_map50']:.3f}"
        text += f", mAP@0.5:0.95 {row['val_map50_95']:.3f}"
    return text + f" ({row['seconds']:.1f} s)"


def resolve_pretrained(setting: str | None, backbone: str) -> str | None:
    """The ImageNet weights file to start from: "auto" finds the backbone's installed weights, if any."""
    if setting in (None, "", "none"):
        return None
    if setting != "auto":
        return setting
    if backbone == "efficientnet_lite0":
        from fastyolo.train.efficientnet import find_pretrained

        return find_pretrained()
    return None


def load_pretrained(model: YoloNet, path: str | os.PathLike) -> None:
    """Load a torchvision ImageNet ResNet state dict from a local file into the backbone."""
    path = Path(path)
    state = read_torch_file(path, what="torch state dict",
                            missing=f"--pretrained file not found: {path} (a torchvision ResNet state dict .pth)")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        model.load_backbone(state)
    except ValueError as exc:
        raise ModelError(f"{path}: {exc} (pass --backbone matching the file)") from None
