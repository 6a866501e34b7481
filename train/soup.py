"""Weight averaging ("model soup", Wortsman et al. 2022): one network from several runs of one recipe.

Runs that start from the same weights and differ only in their data order and augmentation (their
--seed) may end in one basin, where the uniform average of their weights is a network too, and one
that depends less on a single seed. Measured for the packaged recipe (bench/RESULTS.md, "The second
model"), it did not help: three runs' soup scored inside their range. `start_weights` writes the
weights a run starts from, for `fastyolo train --init`; `average_runs` averages the runs and
recomputes the BatchNorm statistics at the averaged weights over the training frames, as each run's
last precise-BN pass did.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from fastyolo.train.checkpoint import load_checkpoint, load_model, save_checkpoint
from fastyolo.train.data import YoloDataset
from fastyolo.train.engine import (
    CONF_PRIOR,
    _loader,
    calibration_subset,
    load_pretrained,
    recalibrate_batchnorm,
    resolve_pretrained,
    set_confidence_prior,
)
from fastyolo.train.model import YoloNet

from fastyolo.datasets import Sample
from fastyolo.errors import ModelError


def start_weights(out: str | os.PathLike, backbone: str, head: str = "conv", seed: int = 0,
                  pretrained: str | None = "auto") -> None:
    """The weights `fastyolo train --seed SEED` starts from (ImageNet backbone, seeded head, confidence prior),
    written as a checkpoint for `--init`: every run given it starts from exactly these, whatever its --seed."""
    torch.manual_seed(seed)  # as train/engine.py _Run._build_model does
    model = YoloNet(backbone, head=head)
    set_confidence_prior(model, CONF_PRIOR)
    weights = resolve_pretrained(pretrained, backbone)
    if weights:
        load_pretrained(model, weights)
    save_checkpoint(out, model, start={"seed": seed, "pretrained": weights and Path(weights).name})


def average_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts of one network (floating tensors; counters from the first)."""
    if not states:
        raise ValueError("no state dicts to average")
    keys = list(states[0])
    for k, state in enumerate(states[1:], 1):
        if list(state) != keys or any(state[n].shape != states[0][n].shape for n in keys):
            raise ModelError(f"run {k + 1} of {len(states)} holds another network than run 1: they cannot be averaged")
    return {n: torch.stack([s[n].double() for s in states]).mean(0).to(states[0][n].dtype)
            if states[0][n].is_floating_point() else states[0][n] for n in keys}


def start_of(checkpoint: dict) -> tuple:
    """Where a run started: ("seed", N, pretrained) for a run from ImageNet weights and a seeded head (with no
    --init, or --init a `start_weights` file), ("init", PATH) for a run fine-tuned from another checkpoint."""
    config = checkpoint.get("config") or {}
    init = config.get("init")
    if not init:
        return ("seed", config.get("seed", 0), config.get("pretrained", "auto"))
    try:
        made = load_checkpoint(init).get("start")
    except ModelError:
        made = None  # moved or gone: only the path can be compared
    if isinstance(made, dict) and "seed" in made:
        return ("seed", made["seed"], "auto" if made.get("pretrained") else None)
    return ("init", str(Path(init).resolve()))


def _said(start: tuple) -> str:
    if start[0] == "init":
        return f"--init {start[1]}"
    return f"seed {start[1]}, " + ("no ImageNet weights" if start[2] in (None, "", "none") else "ImageNet weights")


def average_runs(runs: Sequence[str | os.PathLike], frames: Sequence[Sample], out: str | os.PathLike,
                 batch: int = 16) -> YoloNet:
    """Average the runs' checkpoints, recompute BatchNorm over (up to BN_FRAMES of) `frames`, write `out`."""
    checkpoints = [load_checkpoint(r) for r in runs]
    model = load_model(runs[0])
    for k, c in enumerate(checkpoints[1:], 2):
        if (c["backbone"], c.get("head", "fc")) != (model.backbone_name, model.head_name):
            raise ModelError(f"{runs[k - 1]} is a {c['backbone']} {c.get('head', 'fc')}-head network, "
                             f"{runs[0]} a {model.backbone_name} {model.head_name}-head one: they cannot be averaged")
    starts = [start_of(c) for c in checkpoints]
    if len(set(starts)) > 1:
        raise ModelError("the runs started from different weights (their average would not be a working network): "
                         + "; ".join(f"{r}: {_said(k)}" for r, k in zip(runs, starts, strict=True))
                         + " (train each with --init of one start_weights file)")
    model.load_state_dict(average_states([c["model"] for c in checkpoints]))
    rows = calibration_subset(len(frames))
    subset = YoloDataset([frames[i] for i in rows], augment=False)
    cpu = torch.device("cpu")
    recalibrate_batchnorm(model, _loader(subset, batch, 0, cpu), cpu)
    model.eval()
    save_checkpoint(out, model, soup={"runs": [str(r) for r in runs], "bn_frames": len(rows)})
    return model
