"""Frames decoded and resized once per run (or once per dataset, on disk), instead of once per step.

Two uint8 arrays per frame:

- `exact`: the network input exactly as inference makes it (`resize_rgb`, RGB, INPUT_SIZE square):
  validation, the BatchNorm pass and the un-augmented epochs read it, bit for bit what the
  Detector feeds the network;
- `large`: the frame squashed to LARGE x LARGE BGR (INTER_AREA) for augmentation. The network input
  squashes the frame to a square anyway, so the affine augmentation can run on this square copy:
  its largest zoom in one axis (scale 1.2 x sqrt(aspect 1.8) = 1.61) needs 224 x 1.61 = 361 pixels,
  and LARGE is 384. Validation-only frames have no `large` copy.

"memory" keeps them in RAM (DataLoader workers share them by fork); "disk" writes them to a .npy
file under a cache folder (default ~/.cache/fastyolo/frames, `--cache-dir`), memory-mapped by every
worker and reused by later runs. Its name is a hash of every image's path, size and modification
time, so changed images make a new cache instead of stale frames. "auto" is memory up to
MEMORY_LIMIT bytes (SPAWN_MEMORY_LIMIT where workers are spawned, not forked), disk above.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from fastyolo.train.config import CACHE_MODES
from tqdm import tqdm

from fastyolo.datasets import Sample
from fastyolo.errors import FastYoloError
from fastyolo.layout import INPUT_SIZE
from fastyolo.preprocess import resize_rgb

LARGE = 384  # side of the augmentation copy, see the module docstring
MEMORY_LIMIT = 4 << 30  # "auto" caches in RAM up to this many bytes
SPAWN_MEMORY_LIMIT = 256 << 20  # ... where workers are spawned (each gets a copy), see build_cache
VERSION = 1  # bump when what a cache file holds changes


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastyolo" / "frames"


class FrameCache:
    """`exact` (N, INPUT_SIZE, INPUT_SIZE, 3) RGB and optionally `large` (N, LARGE, LARGE, 3) BGR, uint8."""

    def __init__(self, exact: np.ndarray, large: np.ndarray | None, path: Path | None = None):
        self.exact, self.large, self.path = exact, large, path

    def __len__(self) -> int:
        return len(self.exact)

    def __getstate__(self):
        # A disk cache travels to spawned workers as its path, not as gigabytes of pickled pixels.
        if self.path is not None:
            return {"path": self.path, "has_large": self.large is not None}
        return self.__dict__

    def __setstate__(self, state):
        if "exact" in state:
            self.__dict__.update(state)
            return
        self.path = state["path"]
        self.exact, self.large = _open(self.path, state["has_large"])


def _frame_bytes(large: bool) -> int:
    return INPUT_SIZE * INPUT_SIZE * 3 + (LARGE * LARGE * 3 if large else 0)


def cache_key(samples: Sequence[Sample], large: bool) -> str:
    """A hash of every image's resolved path, size and mtime, plus what the cache holds."""
    entries = []
    for s in samples:
        try:
            st = os.stat(s.image_path)
        except OSError:
            raise FastYoloError(f"cannot read image {s.image_path}: missing") from None
        entries.append([str(Path(s.image_path).resolve()), st.st_size, st.st_mtime_ns])
    text = json.dumps([VERSION, INPUT_SIZE, LARGE if large else 0, entries])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _open(path: Path, large: bool) -> tuple[np.ndarray, np.ndarray | None]:
    exact = np.load(path / "exact.npy", mmap_mode="r")
    return exact, (np.load(path / "large.npy", mmap_mode="r") if large else None)


def _fill(samples: Sequence[Sample], exact: np.ndarray, large: np.ndarray | None, workers: int, what: str) -> None:
    """Decode and resize every frame into the arrays (threads: cv2 releases the GIL)."""

    def one(i: int) -> None:
        image = samples[i].load_image()
        exact[i] = resize_rgb(image)
        if large is not None:
            large[i] = cv2.resize(image, (LARGE, LARGE), interpolation=cv2.INTER_AREA)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for _ in tqdm(pool.map(one, range(len(samples))), total=len(samples), desc=what, leave=False,
                      dynamic_ncols=True, disable=len(samples) < 200):
            pass


def _reserve(folder: Path) -> None:
    """Allocate the memory-mapped files' blocks now: a full disk is then an OSError here, not a SIGBUS
    when a page of the (sparse) file is first written."""
    if not hasattr(os, "posix_fallocate"):
        return
    for file in folder.glob("*.npy"):
        with open(file, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, file.stat().st_size)


def build_cache(samples: Sequence[Sample], *, mode: str = "auto", cache_dir: str | os.PathLike | None = None,
                large: bool = True, workers: int = os.cpu_count() or 1, log=print) -> FrameCache | None:
    """The frames of `samples` decoded and resized once; None for mode "off"."""
    if mode not in CACHE_MODES:
        raise FastYoloError(f"unknown --cache {mode!r}: choose one of {', '.join(CACHE_MODES)}")
    if mode == "off" or not samples:
        return None
    size = len(samples) * _frame_bytes(large)
    if mode == "auto":
        # Forked DataLoader workers share a memory cache; spawned ones (macOS, Windows) get a pickled
        # copy each, so there only small caches stay in memory and the rest is memory-mapped.
        # (allow_none: asking must not fix the start method for the rest of the program)
        method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
        limit = MEMORY_LIMIT if method == "fork" else SPAWN_MEMORY_LIMIT
        mode = "memory" if size <= limit else "disk"
    if mode == "memory":
        exact = np.empty((len(samples), INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        big = np.empty((len(samples), LARGE, LARGE, 3), np.uint8) if large else None
        _fill(samples, exact, big, workers, "caching frames")
        return FrameCache(exact, big)
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    path = folder / cache_key(samples, large)
    if (path / "done").exists():
        log(f"frame cache: {path} (reused)")
        return FrameCache(*_open(path, large), path=path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        exact = np.lib.format.open_memmap(tmp / "exact.npy", "w+", np.uint8, (len(samples), INPUT_SIZE, INPUT_SIZE, 3))
        big = (np.lib.format.open_memmap(tmp / "large.npy", "w+", np.uint8, (len(samples), LARGE, LARGE, 3))
               if large else None)
        _reserve(tmp)
        log(f"frame cache: writing {size / 2**20:,.0f} MiB to {path}")
        _fill(samples, exact, big, workers, "caching frames")
        exact.flush()
        if big is not None:
            big.flush()
        del exact, big
        (tmp / "done").write_text("")
        try:
            os.replace(tmp, path)
        except OSError:
            if not (path / "done").exists():  # not a concurrent run that finished the same cache first
                raise
    except OSError as exc:
        raise FastYoloError(f"cannot write the frame cache in {folder}: {exc.strerror or exc} "
                            "(pass --cache-dir DIR, or --cache memory/off)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written cache is never read: only `path` is
    return FrameCache(*_open(path, large), path=path)


__all__ = ["CACHE_MODES", "LARGE", "FrameCache", "build_cache", "cache_key", "default_cache_dir"]
