"""Checkpoints: written atomically (temp file, then rename) so an interrupted run never leaves a torn file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from fastyolo.train.model import YoloNet

from fastyolo.errors import ModelError
from fastyolo.layout import describe


def save_checkpoint(path: str | os.PathLike, model: YoloNet, **extra: Any) -> None:
    """Save model weights, backbone name, layout and anything in `extra` (optimizer, epoch, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "backbone": model.backbone_name, "head": model.head_name, "layout": describe(),
             **extra}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_torch_file(path: Path, *, weights_only: bool, missing: str, what: str) -> Any:
    """torch.load on the CPU with one-line ModelErrors: `missing` if there is no file, else unreadable `what`."""
    if not path.is_file():
        raise ModelError(missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:
        raise ModelError(f"{path} is not a readable {what} ({type(exc).__name__}: {exc})") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint dict, with clear errors for a missing, corrupt or foreign file."""
    path = Path(path)
    state = read_torch_file(path, weights_only=False, missing=f"checkpoint not found: {path}",
                            what="fastyolo checkpoint")
    if not isinstance(state, dict) or "model" not in state or "backbone" not in state:
        raise ModelError(f"{path} is a torch file but not a fastyolo checkpoint (no 'model'/'backbone' entries)")
    if state.get("layout", describe()) != describe():
        raise ModelError(f"{path} was trained for another output layout: {state['layout']}")
    return state


def load_model(path: str | os.PathLike) -> YoloNet:
    """The network of a checkpoint, in eval mode."""
    state = load_checkpoint(path)
    model = YoloNet(state["backbone"], head=state.get("head", "fc"))  # checkpoints before the conv head: fc
    model.load_state_dict(state["model"])
    return model.eval()


def rng_state() -> dict[str, Any]:
    """The torch random states (CPU and every CUDA device) that dropout and shuffling draw from."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() returned, so a resumed run draws the same numbers."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
