"""Checkpoints: written atomically (temp file, then rename) so an interrupted run never leaves a torn file."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from fastyolo.train.model import YoloNet

from fastyolo.errors import ModelError, OutputError
from fastyolo.layout import describe


def save_checkpoint(path: str | os.PathLike, model: YoloNet, **extra: Any) -> None:
    """Save model weights, backbone name, layout and anything in `extra` (optimizer, epoch, ...).

    A failed write (a full disk) raises OutputError in one line and leaves the earlier file as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "backbone": model.backbone_name, "head": model.head_name, "layout": describe(),
             **extra}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    sink = None
    try:
        with os.fdopen(fd, "wb") as f:
            sink = _Sink(f)
            torch.save(state, sink)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch.save reports a failed write (a full disk) as "unexpected pos": the file's own error says why
        raise write_failed(path, sink.error if sink is not None and sink.error is not None else exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Sink:
    """The file torch.save writes through, keeping the OSError of a failed write (torch reports only its own)."""

    def __init__(self, file: Any):
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.file.flush()


def write_failed(path: Path, exc: BaseException) -> OutputError:
    """One line for a file that could not be written: why, the space left, and that nothing was replaced."""
    if isinstance(exc, OutputError):
        return exc
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
        f"the write failed ({(str(exc).strip().splitlines() or [type(exc).__name__])[0]})"
    try:
        free = f" ({shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there)"
    except OSError:
        free = ""
    kept = f"the earlier {path.name} is kept" if path.exists() else "nothing was replaced"
    return OutputError(f"cannot write {path}: {reason}{free}; {kept}")


def read_torch_file(path: Path, *, missing: str, what: str) -> Any:
    """torch.load on the CPU, tensors and plain data only (weights_only): a pickle that names any other
    function or class could run code as it loads, so it is refused before anything of it runs.
    One-line ModelErrors: `missing` if there is no file, else what is wrong with the file."""
    if not path.is_file():
        raise ModelError(missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"GLOBAL (\S+)", str(exc))
        held = f"it holds {named.group(1)}" if named else "it holds objects other than tensors and plain data"
        raise ModelError(f"{path} is not a {what} or not trusted: {held}, which could run code as it loads "
                         "(refused unread; fastyolo files hold tensors and plain data only)") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ModelError(f"{path} is not a readable {what} ({type(exc).__name__}: {first})") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint dict (tensors and plain data only), with clear errors for a missing, corrupt,
    foreign or untrusted file."""
    path = Path(path)
    state = read_torch_file(path, missing=f"checkpoint not found: {path}", what="fastyolo checkpoint")
    if not isinstance(state, dict) or "model" not in state or "backbone" not in state:
        raise ModelError(f"{path} is a torch file but not a fastyolo checkpoint (no 'model'/'backbone' entries)")
    if state.get("layout", describe()) != describe():
        raise ModelError(f"{path} was trained for another output layout: {state['layout']}")
    return state


def load_model(path: str | os.PathLike) -> YoloNet:
    """The network of a checkpoint, in eval mode."""
    state = load_checkpoint(path)
    try:
        model = YoloNet(state["backbone"], head=state.get("head", "fc"))  # checkpoints before the conv head: fc
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path} is not a fastyolo checkpoint: {exc}") from None
    load_weights(model, state, path)
    return model.eval()


def load_weights(model: YoloNet, state: dict[str, Any], path: str | os.PathLike) -> None:
    """A checkpoint's weights into `model`, or one ModelError line saying why they do not fit it."""
    try:
        keys = model.load_state_dict(state["model"], strict=False)
        problem = keys.missing_keys and f"{len(keys.missing_keys)} of its weights missing, e.g. {keys.missing_keys[0]}"
        problem = problem or keys.unexpected_keys and f"weights of another network, e.g. {keys.unexpected_keys[0]}"
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:  # shapes of another network
        problem = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
    if problem:
        raise ModelError(f"{path} does not fit a {model.backbone_name} {model.head_name}-head YoloNet: {problem}")


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
