"""TrainConfig: every training default, in one place, importable without torch (the CLI reads it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

MILESTONES = (0.8, 0.9)  # fractions of all steps where the learning rate drops 10x
WARMUP = 0.05  # fraction of all steps of linear warm-up from lr/10
AMP_MODES = ("auto", "bf16", "fp16", "off")  # TrainConfig.amp
CACHE_MODES = ("auto", "memory", "disk", "off")  # TrainConfig.cache
AUGMENT_ON = ("auto", "workers", "device")  # TrainConfig.augment_on


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
    extra: dict[str, Any] = field(default_factory=dict)
