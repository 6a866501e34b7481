"""Runtime defaults and the command-line options `bench`, `detect` and `eval` share, with one validation.

Like Ultralytics' cfg/default.yaml + check_cfg: every default lives here, every command adds the
shared options with `add_runtime_options` and checks them with `check_runtime_args` before any
work starts, so `--conf 2`, `--threads -3`, `--backend onnxruntime --precision bf16` or
`--backend tensorrt` with an .onnx fail the same way (one line, exit code 2) in each command.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fastyolo import precisions
from fastyolo.errors import UsageError

CONF = 0.25  # score threshold of a detection
IOU = 0.45  # NMS IoU threshold
TOP_K = 100  # most detections per frame (COCO counts at most 100)
MAP_CONF = 0.01  # mAP integrates over every threshold: evaluation keeps boxes down to this score
CPU_BACKENDS = ("openvino", "onnxruntime")
BACKENDS = ("auto", *CPU_BACKENDS, "tensorrt")
PRECISIONS = precisions.for_runtime(*CPU_BACKENDS)  # what a CPU Detector can be asked to run (fastyolo.precisions)
ENGINE_SUFFIXES = (".plan", ".engine")
# Tiled inference (fastyolo/tiles.py): the frame cut into overlapping tiles, each squashed to the network input.
TILES = "off"  # off | auto | CxR (columns x rows) | CxR+full (the whole frame as one more input)
TILE_OVERLAP = 0.2  # neighbouring tiles share this fraction of a tile's side (SAHI's default overlap ratio)
TILE_AUTO_ASPECT = 2.0  # "auto" tiles frames at least this many times wider than tall (KITTI 3.3:1; not 16:9)
# "auto" picks the columns whose tiles come closest to this width:height: the packaged model was trained on
# 16:9 frames squashed to a square, and its tiles work best in that shape (KITTI: 2x1 above 3x1 and 4x1).
TILE_AUTO_SHAPE = 16 / 9
TILE_AUTO_FULL = True  # "auto" adds the whole frame to the tiles (it finds the big, near cars that tiles cut)
TILE_MAX = 16  # most tiles per frame: each one is a network input


@dataclass(frozen=True)
class TileSpec:
    """A parsed --tiles / tiles= value: `columns` x `rows` tiles (+ the whole frame if `full`), or `auto`."""

    columns: int = 1
    rows: int = 1
    full: bool = False
    auto: bool = False

    @property
    def off(self) -> bool:
        return not self.auto and self.columns * self.rows == 1

    def __str__(self) -> str:
        if self.auto:
            return "auto"
        return "off" if self.off else f"{self.columns}x{self.rows}{'+full' if self.full else ''}"


_TILES_RE = re.compile(r"(\d+)x(\d+)(\+full)?")


def parse_tiles(value: str | TileSpec, name: str = "--tiles") -> TileSpec:
    """'off' / 'none', 'auto', 'CxR' or 'CxR+full' (e.g. '3x1+full') -> TileSpec; UsageError in one line otherwise."""
    if isinstance(value, TileSpec):
        return value
    text = str(value).strip().lower()
    if text in ("off", "none", "1x1"):
        return TileSpec()
    if text == "auto":
        return TileSpec(auto=True)
    m = _TILES_RE.fullmatch(text)
    if m is None:
        raise UsageError(f"{name} {value!r}: write off, auto, or COLUMNSxROWS with an optional +full (3x1, 2x2+full)")
    columns, rows = int(m[1]), int(m[2])
    if not 1 <= columns * rows <= TILE_MAX or columns < 1 or rows < 1:
        raise UsageError(f"{name} {value!r}: 1 to {TILE_MAX} tiles per frame (each is one more network input)")
    if columns * rows == 1:
        if m[3]:
            raise UsageError(f"{name} {value!r}: one tile is the whole frame already: write off")
        return TileSpec()
    return TileSpec(columns, rows, bool(m[3]))


def check_tile_overlap(value: float, name: str = "tile_overlap") -> float:
    if not 0.0 <= value <= 0.5:  # also False for NaN; past half a tile the tiles mostly repeat each other
        raise UsageError(f"{name} must be between 0 and 0.5 (a fraction of a tile's side), got {value}")
    return float(value)


RAY_CHUNK_FRAMES = 1000  # frames (or images) per Ray task: ~10-30 s of work on one CPU, few enough tasks for the driver


def add_ray_options(p: argparse.ArgumentParser, *, module: str, run: str, actors: str,
                    chunk: str) -> argparse._ArgumentGroup:
    """The --ray [ADDRESS], --workers and --chunk-frames options of a command that runs on a Ray cluster."""
    ray = p.add_argument_group(f"Ray cluster (fastyolo[ray]; see {module})")
    ray.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help=f"{run} on Ray: no ADDRESS starts Ray on this machine, 'auto' or HOST:PORT joins a cluster "
                          "('ray start --head'); the same command resumes a stopped run")
    ray.add_argument("--workers", type=int, default=None,
                     help=f"with --ray: {actors} actors [the cluster's CPUs / --threads]; --threads is each one's CPUs [1]")
    ray.add_argument("--chunk-frames", type=int, default=None, help=f"with --ray: {chunk} [{RAY_CHUNK_FRAMES}]")
    return ray


def add_runtime_options(p: argparse.ArgumentParser, *, conf: float = CONF, iou: float = IOU,
                        precision_help: str | None = None) -> None:
    """--backend, --precision, --threads, --conf, --iou, --tiles with this module's defaults."""
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto (OpenVINO for an .onnx, TensorRT for a .plan), openvino, onnxruntime, tensorrt [auto]")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help=precision_help or "fp32; bf16 (OpenVINO, where the CPU has it); int8 (a Q/DQ model) [fp32]")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every library [all cores]")
    p.add_argument("--conf", type=float, default=conf, help=f"score threshold [{conf}]")
    p.add_argument("--iou", type=float, default=iou, help=f"NMS IoU threshold [{iou}]")
    p.add_argument("--tiles", default=TILES,
                   help="cut each frame into overlapping tiles, all run in one network call: off, auto (frames at "
                        f"least {TILE_AUTO_ASPECT:g}x wider than tall), COLUMNSxROWS, COLUMNSxROWS+full (the whole "
                        f"frame too), e.g. 3x1+full [{TILES}]")


def check_fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:  # also False for NaN
        raise UsageError(f"{name} must be between 0 and 1 (thresholds are fractions), got {value}")
    return float(value)


def check_at_least(name: str, value: int | float | None, minimum: int | float, *, optional: bool = False):
    if value is None and optional:
        return None
    if value is None or not value >= minimum:
        raise UsageError(f"{name} must be at least {minimum}, got {value}")
    return value


def check_runtime(*, model: str | os.PathLike | None, backend: str, precision: str, conf: float, iou: float,
                  threads: int | None, top_k: int = TOP_K, flag: bool = True) -> None:
    """Raise UsageError in one line when the runtime options are out of range or do not fit together.

    `flag` names them as command-line options (--conf) rather than keyword arguments (conf).
    """
    def name(n: str) -> str:
        return f"--{n.replace('_', '-')}" if flag else n

    check_fraction(name("conf"), conf)
    check_fraction(name("iou"), iou)
    check_at_least(name("threads"), threads, 1, optional=True)
    check_at_least(name("top_k"), top_k, 1)
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    engine = model is not None and Path(model).suffix.lower() in ENGINE_SUFFIXES
    if precision not in PRECISIONS and not engine:  # an engine's precision is checked by the TensorRT runtime
        raise UsageError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if backend in CPU_BACKENDS and precision in PRECISIONS and (why := precisions.only_on(precision, backend)):
        other = next(b for b in CPU_BACKENDS if b != backend)
        raise UsageError(f"{why}: use {name('backend')} {other} (or {name('precision')} fp32)")
    if model is None:
        return
    if backend == "tensorrt" and not engine:
        raise UsageError(f"{name('backend')} tensorrt runs a TensorRT engine (.plan), not {Path(model).name}: "
                         "build one with 'fastyolo build-engine MODEL.onnx -o engine.plan'")
    if engine and backend in CPU_BACKENDS:
        raise UsageError(f"{Path(model).name} is a TensorRT engine: {name('backend')} must be auto or tensorrt, "
                         f"not {backend}")


def check_runtime_args(args: argparse.Namespace, model: str | os.PathLike | None = None) -> None:
    """check_runtime on the options `add_runtime_options` added (model: the file that will run, if known)."""
    check_runtime(model=model, backend=args.backend, precision=args.precision, conf=args.conf, iou=args.iou,
                  threads=args.threads)
    args.tiles = parse_tiles(getattr(args, "tiles", TILES))
