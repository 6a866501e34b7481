"""TrainConfig: every training default, in one place, importable without torch (the CLI reads it)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastyolo.errors import UsageError

MILESTONES = (0.8, 0.9)  # fractions of all steps where the learning rate drops 10x
WARMUP = 0.05  # fraction of all steps of linear warm-up from lr/10
AMP_MODES = ("auto", "bf16", "fp16", "off")  # TrainConfig.amp
CACHE_MODES = ("auto", "memory", "disk", "off")  # TrainConfig.cache
AUGMENT_ON = ("auto", "workers", "device")  # TrainConfig.augment_on
BALANCED = "balanced"  # TrainConfig.source_weights: every --data folder the same share of each epoch
CLASS_BALANCE = 0.5  # --class-balance without a value: LVIS's t, classes in under half the frames drawn more
# TrainConfig.cell_order: which object a grid cell keeps when objects of different classes share it
# (train/targets.py). "area": the largest; "rare": the rarest class (train/targets.py RARE_FIRST), then the largest.
CELL_ORDERS = ("area", "rare")
CELL_ORDER = "area"  # the default: "rare" measured worse (bench/RESULTS.md, "Where the rare classes went")
ZOOM = 2.0  # TrainConfig.zoom's default
BOX_LOSSES = ("sse", "giou")  # TrainConfig.box_loss (train/loss.py): the paper's squared errors, or 1 - GIoU


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint so --resume continues the same run."""

    out: str
    epochs: int = 100
    batch: int = 16
    backbone: str = "resnet50"
    head: str = "conv"
    pretrained: str | None = "auto"  # "auto": the backbone's installed ImageNet weights if any (efficientnet_lite0)
    init: str | None = None  # a fastyolo checkpoint to start from (fine-tuning), instead of random weights
    optimizer: str = "adam"
    lr: float | None = None  # None: the optimizer's default (SGD 1e-2, AdamW 1e-3)
    warmup: float = WARMUP
    milestones: tuple[float, ...] = MILESTONES
    augment: bool = True
    aspect: float = 1.8  # augmentation stretches width/height by up to this (cameras' aspect ratios differ)
    clean_tail: float = 0.3  # the last 30% of epochs train on un-augmented frames (YOLOX's no-aug epochs)
    dropout: float = 0.0
    freeze_bn: float = 1.0  # from this fraction of the epochs on, BatchNorm uses its running statistics
    precise_bn: bool = True  # after each epoch, BatchNorm statistics = the average over the training frames
    seed: int = 0
    workers: int = min(8, os.cpu_count() or 1)  # DataLoader processes, persistent for the run (a GPU eats ~1,500 images/s)
    device: str = "auto"
    amp: str = "auto"  # autocast: "bf16", "fp16" (CUDA, loss-scaled) or "off"; auto: bf16 on CUDA and AMX CPUs
    channels_last: bool | None = None  # NHWC activations; None: on (faster in every measured case, engine.pick_precision)
    cache: str = "auto"  # frames decoded once: "memory", "disk" (reused by later runs), "off"; see train/cache.py
    cache_dir: str | None = None  # where "disk" caches live (default ~/.cache/fastyolo/frames)
    # Who makes the augmented pixels: the DataLoader workers (OpenCV) or the training device (torch, one batch at a
    # time; needs the cache). auto: workers until a GPU measurement says otherwise (engine.pick_augment_on).
    augment_on: str = "auto"
    checkpoint_every: float = 60.0  # seconds between last.pt writes (also at the end, on Ctrl-C and SIGTERM)
    eval_every: int = 1
    min_size: float = 0.0  # boxes smaller than this (pixels) are ignored by the mAP
    val_name: str = "val"  # how to call the validation frames: "val", or "train" when they are the training frames
    # The recipe of issue 20, each off until measured better on data the run did not train on (bench/RESULTS.md).
    # Sampling (train/data.py sampling_weights): one weight per --data folder (each of its frames drawn that many
    # times as often), or BALANCED; and LVIS's repeat-factor threshold t for frames of rare classes (0: off).
    source_weights: tuple[float, ...] | str | None = None
    class_balance: float = 0.0
    mosaic: float = 0.0  # chance that an augmented frame is a 2x2 mosaic of four (train/augment.py draw_mosaic)
    # Augmentation zooms in up to this factor, so distant cars are seen larger (1: off). 2 beat 1 on every held-out set
    # (means of 3 and 5 seeds: bench/RESULTS.md, "Mosaic and zoom-in" and after); runs saved before trained with 1.
    zoom: float = ZOOM
    cell_order: str = CELL_ORDER  # CELL_ORDERS; checkpoints saved before the option existed trained with "area"
    box_loss: str = "sse"  # BOX_LOSSES; checkpoints saved before the option existed trained with "sse"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.source_weights = parse_source_weights(self.source_weights)
        check_recipe(self)


def parse_source_weights(value: Sequence[str | float] | str | None) -> tuple[float, ...] | str | None:
    """--source-weights as given (["1", "1", "2"], ["balanced"], a tuple of numbers) -> numbers or BALANCED."""
    if value is None or value == BALANCED:
        return value
    if isinstance(value, str):
        value = value.split()
    words = list(value)
    if [str(w).lower() for w in words] == [BALANCED]:
        return BALANCED
    try:
        weights = tuple(float(w) for w in words)
    except ValueError:
        raise UsageError(f"--source-weights takes one number per --data folder or '{BALANCED}', got "
                         f"{' '.join(map(str, words))}") from None
    if not weights or not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise UsageError(f"--source-weights must be numbers >= 0, not all 0, got {' '.join(map(str, words))}")
    return weights


def check_recipe(config: TrainConfig) -> None:
    """The recipe's options in range and fit together (one UsageError line), before any data is read."""
    if not 0.0 <= config.mosaic <= 1.0:
        raise UsageError(f"--mosaic is a probability in [0, 1], got {config.mosaic}")
    if not (math.isfinite(config.clean_tail) and 0.0 <= config.clean_tail < 1.0):
        raise UsageError(f"--clean-tail is the fraction of the epochs without augmentation, in [0, 1), got "
                         f"{config.clean_tail}")
    if not (math.isfinite(config.zoom) and config.zoom >= 1.0):
        raise UsageError(f"--zoom is the largest zoom-in factor, at least 1 (1: off), got {config.zoom}")
    if not (math.isfinite(config.class_balance) and config.class_balance >= 0.0):
        raise UsageError(f"--class-balance is a fraction of the frames t >= 0 (0: off), got {config.class_balance}")
    if config.box_loss not in BOX_LOSSES:
        raise UsageError(f"--box-loss is one of {', '.join(BOX_LOSSES)}, got {config.box_loss!r}")
    if config.cell_order not in CELL_ORDERS:
        raise UsageError(f"--cell-order is one of {', '.join(CELL_ORDERS)}, got {config.cell_order!r}")
    if config.mosaic > 0 and config.augment and config.augment_on == "device":
        raise UsageError("--mosaic needs --augment-on workers (the device warps one frame per item)")
    folders = config.extra.get("data")
    if isinstance(config.source_weights, tuple) and isinstance(folders, list | tuple) and \
            len(config.source_weights) != len(folders):
        raise UsageError(f"--source-weights: {len(config.source_weights)} weights for {len(folders)} --data folders")
