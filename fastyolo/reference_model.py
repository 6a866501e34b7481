"""The untrained reference network that `fastyolo bench` times when no model is given.

Exported on first use (needs the `[train]` extra) into the user cache and reused after.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from fastyolo.errors import MissingDependencyError

SEED = 0
UNTRAINED_HEAD_STD = 0.2  # part of the cached file's name: see untrained_model


def cache_dir() -> Path:
    root = os.environ.get("FASTYOLO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastyolo"
    )
    return Path(root)


def _network_version() -> str:
    """A digest of the network's source (train/model.py, found without importing torch), so a cached
    export is never that of an older network with the same backbone name."""
    spec = importlib.util.find_spec("fastyolo.train.model")
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return "unknown"
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()[:10]


def untrained_network(backbone: str = "resnet50"):
    """The torch network that untrained_model exports (seeded): for tests that compare against it."""
    import torch

    from fastyolo.train.model import YoloNet

    torch.manual_seed(SEED)
    model = YoloNet(backbone)
    # A trained head's output layer starts near zero (every cell alike); spread it so that the
    # untrained network's boxes, scores (up to ~0.5) and classes vary like a real one's.
    torch.nn.init.normal_(model.head.out.weight, std=UNTRAINED_HEAD_STD)
    return model.eval()


def untrained_model(backbone: str = "resnet50", *, quiet: bool = False, input_format: str | None = None) -> Path:
    """Path of the cached untrained ONNX for `backbone`, exporting it first if needed.

    input_format: fastyolo.input_format NORMALIZED (the default: floats normalised on the host) or
    UINT8 (normalisation in the graph); same seed, so both hold the same network.
    The file name carries a digest of the network's code: a changed network is exported afresh.
    """
    from fastyolo.input_format import NORMALIZED, UINT8

    input_format = input_format or NORMALIZED
    tag = "-uint8" if input_format == UINT8 else ""
    path = cache_dir() / f"untrained-{backbone}-seed{SEED}-head{UNTRAINED_HEAD_STD}-{_network_version()}{tag}.onnx"
    if path.is_file():
        return path
    try:
        import torch  # noqa: F401  (the clear error below rather than deep inside the export)

        from fastyolo.train.export import export_onnx
    except ImportError:
        raise MissingDependencyError(
            "the untrained reference network is exported on first use and torch is not installed: "
            "pass --model MODEL.onnx (or no --model: the packaged model), or pip install 'fastyolo[train]'"
        ) from None
    if not quiet:
        print(f"exporting the untrained {backbone} reference network to {path} (once) ...", flush=True)
    diff = export_onnx(untrained_network(backbone), path, untrained=True, input_format=input_format)
    from fastyolo.fileio import file_mode

    path.chmod(file_mode())
    if not quiet:
        print(f"  onnxruntime vs torch max abs diff {diff:.2e}", flush=True)
    return path
