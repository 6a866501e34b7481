"""Training curves as a PNG: losses on the left, mAP on the right."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike, val_name: str = "val") -> Path:
    """Draw train/validation loss and mAP@0.5 (and 0.5:0.95) per epoch into `path`.

    `val_name` says what the validation frames are ("val", or "train" when validating on the training set).
    """
    path = Path(path)
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [row["epoch"] for row in history]
    ax_loss.plot(epochs, [row["train_loss"] for row in history], label="train loss")
    val = [(row["epoch"], row["val_loss"]) for row in history if "val_loss" in row]
    if val:
        ax_loss.plot([e for e, _ in val], [v for _, v in val], marker=".", label=f"{val_name} frames, eval mode")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("YOLO loss per image")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    for key, label in (("map50", "mAP@0.5"), ("map50_95", "mAP@0.5:0.95")):
        points = [(row["epoch"], row[f"val_{key}"]) for row in history if f"val_{key}" in row]
        if points:
            ax_map.plot([e for e, _ in points], [v for _, v in points], marker=".", label=f"{label} on {val_name} frames")
    ax_map.set_ylim(0, 1)
    ax_map.set_xlabel("epoch")
    ax_map.set_ylabel("mAP")
    ax_map.grid(alpha=0.3)
    if ax_map.lines:
        ax_map.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
