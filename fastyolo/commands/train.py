"""fastyolo train: train the detector on labelled frames (Udacity CSV or KITTI), with validation mAP and resume.

Every default comes from `fastyolo.train.config.TrainConfig` (torch-free, so the parser builds
without the [train] extra); the CLI only shows and passes them on.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

from fastyolo.errors import FastYoloError, MissingDependencyError
from fastyolo.train.config import AMP_MODES, AUGMENT_ON, BOX_LOSSES, CACHE_MODES, CELL_ORDERS, CLASS_BALANCE

# Settings that define a run's data; --resume keeps them unless the command line gives new ones.
RUN_SETTINGS = ("data", "labels", "val", "val_split", "skip_malformed")
LOCK_NAME = ".fastyolo-train.lock"  # OUT/LOCK_NAME: held (flock) by the run writing into OUT
BACKBONES = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0")  # train/model.py BACKBONES (no torch here)
HEADS = ("conv", "slim", "fc")  # train/model.py HEADS


def _defaults() -> dict:
    """TrainConfig's field defaults."""
    from fastyolo.train.config import TrainConfig

    return {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def add_parser(subparsers) -> argparse.ArgumentParser:
    d = _defaults()
    p = subparsers.add_parser(
        "train", help="train on labelled frames (needs the [train] extra)",
        description="Train the YOLO network. Multi-GPU: torchrun --nproc-per-node K -m fastyolo.cli train ...",
    )
    p.add_argument("--data", type=Path, nargs="+",
                   help="one or more folders with labels.csv or label_2/ and the images (their frames are pooled)")
    p.add_argument("--labels", type=Path, help="labels file, if not DATA/labels.csv (one --data only)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--val-split", type=float, default=0.2,
                       help="fraction of DATA held out for validation; 0 validates on the training frames [0.2]")
    split.add_argument("--val", type=Path, nargs="+", help="separate validation folder(s) (instead of --val-split)")
    p.add_argument("--out", type=Path, required=True, help="run folder: last.pt, best.pt, metrics.jsonl, curves.png")
    p.add_argument("--epochs", type=int, default=None,  # None: not given (--resume keeps the run's); TrainConfig's
                   help=f"epochs; with --resume, a larger number extends a finished run [{d['epochs']}]")
    p.add_argument("--batch", type=int, default=d["batch"],
                   help=f"images per step (per process under torchrun) [{d['batch']}]")
    p.add_argument("--backbone", default=d["backbone"], choices=BACKBONES, help=f"[{d['backbone']}]")
    p.add_argument("--head", default=d["head"], choices=HEADS,
                   help="conv: 1x1 + two 3x3 convolutions on the 11x11 grid; slim: the 3x3s depthwise-separable (fewer "
                        f"multiply-adds); fc: YOLO v1's fully connected head [{d['head']}]")
    p.add_argument("--pretrained", nargs="?", const="auto", default=d["pretrained"],
                   help="ImageNet weights for the backbone: a torchvision ResNet state dict (.pth); 'auto' (the "
                        "default) uses efficientnet_lite0's when the [pretrained] extra is installed; 'none': random")
    p.add_argument("--init", type=Path, help="fastyolo checkpoint (.pt) to fine-tune from, e.g. an earlier best.pt")
    p.add_argument("--optimizer", default=d["optimizer"], choices=("adam", "sgd"),
                   help=f"adam: AdamW (learns far faster from scratch); sgd: the paper's SGD 1e-2 [{d['optimizer']}]")
    p.add_argument("--lr", type=float,
                   help="base learning rate [AdamW 1e-3, SGD 1e-2] (warm-up from lr/10, /10 at 80%% and 90%% of the steps)")
    p.add_argument("--no-augment", action="store_true", help="no translate/scale/HSV/flip augmentation")
    p.add_argument("--source-weights", nargs="+", metavar="W",
                   help="sampling weight of each --data folder's frames, one number per folder ('1 1 2': the third's "
                        "twice as often), or 'balanced': every folder the same share of each epoch [pooled as read]")
    p.add_argument("--class-balance", type=float, nargs="?", const=CLASS_BALANCE, default=d["class_balance"],
                   metavar="T", help="repeat-factor sampling (LVIS): frames holding a class found in under a share T "
                                     "of the frames come sqrt(T / share) times as often "
                                     f"[{d['class_balance']}: off; the flag alone: {CLASS_BALANCE}]")
    p.add_argument("--clean-tail", type=float, default=d["clean_tail"], metavar="F",
                   help="the last fraction F of the epochs trains on un-augmented frames (0: augment to the end) "
                        f"[{d['clean_tail']}]")
    p.add_argument("--mosaic", type=float, default=d["mosaic"], metavar="P",
                   help=f"chance that an augmented frame is a 2x2 mosaic of four (not in the clean tail) [{d['mosaic']}]")
    p.add_argument("--zoom", type=float, default=d["zoom"], metavar="MAX",
                   help=f"augmentation zooms in up to MAX (a random crop enlarged; 1: off) [{d['zoom']}]")
    p.add_argument("--cell-order", choices=CELL_ORDERS, default=d["cell_order"],
                   help="which object a grid cell keeps when objects of different classes share it: 'area' the "
                        f"largest, 'rare' the rarest class (Pedestrian, Truck, Car) [{d['cell_order']}]")
    p.add_argument("--box-loss", choices=BOX_LOSSES, default=d["box_loss"],
                   help="how boxes are regressed: 'sse' the YOLO v1 paper's squared errors of x, y, sqrt w, sqrt h; "
                        f"'giou' 1 - generalized IoU with the object [{d['box_loss']}]")
    p.add_argument("--dropout", type=float, default=d["dropout"],
                   help=f"head dropout while training [{d['dropout']}]")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--device", default=d["device"], help="auto, cpu or cuda [auto]")
    p.add_argument("--workers", type=int, default=d["workers"], help=f"DataLoader worker processes [{d['workers']}]")
    p.add_argument("--amp", choices=AMP_MODES, default=None,
                   help="mixed precision: bf16 autocast (fp32 loss), fp16 (CUDA, loss-scaled) or off; auto: bf16 on "
                        f"CUDA and on CPUs with AMX, else off [{d['amp']}]")
    p.add_argument("--cache", choices=CACHE_MODES, default=None,
                   help="decode and resize the frames once: in memory, or on disk (reused by later runs while the "
                        f"images are unchanged); off: decode every step; auto: memory up to 4 GiB [{d['cache']}]")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="folder for --cache disk [~/.cache/fastyolo/frames]")
    p.add_argument("--augment-on", choices=AUGMENT_ON, default=None,
                   help="who makes the augmented pixels: the DataLoader workers (OpenCV) or the training device "
                        f"(torch, a batch at a time, from the frame cache); auto: workers [{d['augment_on']}]")
    p.add_argument("--eval-every", type=int, default=d["eval_every"], help="validate every N epochs [1]")
    p.add_argument("--min-size", type=float, default=d["min_size"],
                   help="mAP ignores boxes under this many network-input pixels")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out where it stopped (or extend it: --epochs larger than before)")
    p.add_argument("--stop-after", type=int, help="stop cleanly after this epoch (continue later with --resume)")
    p.add_argument("--skip-malformed", action="store_true", help="skip malformed label rows instead of failing")
    return p


def _check_options(args: argparse.Namespace) -> None:
    """Out-of-range options stop before anything is read or written."""
    if args.epochs is not None and args.epochs < 1 or args.batch < 1:
        raise FastYoloError(f"--epochs and --batch must be at least 1, got {args.epochs} and {args.batch}")
    if args.lr is not None and not args.lr > 0:
        raise FastYoloError(f"--lr must be a positive number, got {args.lr}")
    if not 0.0 <= args.dropout < 1.0:
        raise FastYoloError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.min_size < 0:
        raise FastYoloError(f"--min-size must be >= 0 pixels, got {args.min_size}")
    if args.workers < 0 or args.eval_every < 1:
        raise FastYoloError(f"--workers must be >= 0 and --eval-every >= 1, got {args.workers} and {args.eval_every}")
    if args.amp == "fp16" and args.device == "cpu":
        raise FastYoloError("--amp fp16 needs a CUDA device (on a CPU use bf16 or off)")
    if args.augment_on == "device" and args.cache == "off" and not args.no_augment:
        raise FastYoloError("--augment-on device warps the frame cache's copies: drop --cache off")
    if args.stop_after is not None and args.stop_after < 1:
        raise FastYoloError(f"--stop-after must be at least 1, got {args.stop_after}")
    if args.labels is not None and args.data is not None and len(args.data) > 1:
        raise FastYoloError("--labels names the labels file of one --data folder; with several, give each its labels.csv")


def _check_out(out: Path) -> None:
    """The run folder can be created and written (checked before any data is read)."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise FastYoloError(f"--out {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise FastYoloError(f"--out {out}: {probe} is not writable")


def _check_outside_data(out: Path, data, val, labels) -> None:
    """The run folder may not be, lie inside or hold a folder the run reads (--data, --val, the labels' folder):
    its files would mix with the dataset's (as `fastyolo label` refuses the same)."""
    target = Path(os.path.realpath(out))
    labels = labels and Path(labels)
    folders = [*(data or []), *(val or []), *([labels if labels.is_dir() else labels.parent] if labels else [])]
    for folder in folders:
        source = Path(os.path.realpath(folder))
        if target == source or source in target.parents:
            raise FastYoloError(f"--out {out} is inside the dataset folder {folder}: choose a folder outside the data")
        if target in source.parents:
            raise FastYoloError(f"--out {out} holds the dataset folder {folder}: choose a folder outside the data")


def _check_empty(out: Path) -> None:
    """A new run starts in a new or empty folder only: a run folder is never overwritten, nor a user's files."""
    held = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) if out.is_dir() else []
    if held:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise FastYoloError(f"--out {out} is not empty ({shown}) and holds no last.pt to --resume: its files are "
                            "never overwritten, choose a new or empty folder")


def _training_frames(train: list, val: list) -> int:
    """How many validation frames are training frames: the same image file, through whatever path, link or
    folder named it (a copy of the file elsewhere is not caught)."""
    def identity(path) -> tuple | str:
        try:
            stat = os.stat(path)
            return stat.st_dev, stat.st_ino
        except OSError:
            return os.path.realpath(path)

    seen = {identity(s.image_path) for s in train}
    return sum(identity(s.image_path) in seen for s in val)


@contextlib.contextmanager
def lock_run_folder(out: Path) -> Iterator[None]:
    """Hold an OS lock (flock) on OUT/.fastyolo-train.lock for the whole run, so that a second `fastyolo train
    --out OUT` started meanwhile refuses in one line instead of writing the same last.pt. The kernel drops the
    lock with the process (a killed run leaves none held); the folders made for the run are removed again
    when it ends having written nothing."""
    made = []
    probe = out
    while not probe.exists():
        made.append(probe)
        probe = probe.parent
    out.mkdir(parents=True, exist_ok=True)
    path, fd = out / LOCK_NAME, None
    try:
        fd = _lock(path, out)
        yield
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)  # before the lock goes: a run that opened this file sees it is stale
            os.close(fd)
        for folder in made:  # deepest first; a folder the run wrote into stays
            try:
                folder.rmdir()
            except OSError:
                break


def _lock(path: Path, out: Path) -> int | None:
    """The descriptor holding the lock on `path` (with this process's id in it), or None where the system has
    no flock (the run goes on unlocked, said once)."""
    try:
        import fcntl
    except ImportError:  # Windows
        print(f"note: {out} is not locked on this system: do not start a second run into it")
        return None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise FastYoloError(f"--out {out} is in use by another fastyolo train"
                                f"{f' (process {holder})' if holder.isdigit() else ''}: wait for it to end, or choose "
                                "another --out") from None
        except OSError as exc:  # a file system without flock (some network mounts)
            os.close(fd)
            print(f"note: {out} cannot be locked ({exc.strerror}): do not start a second run into it")
            return None
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # the run that held it ended and removed the file: lock the file now in its place
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _settings(args: argparse.Namespace) -> dict:
    """The data a run reads, with absolute paths so --resume works from any directory."""
    def absolute(paths):
        return [str(Path(p).resolve()) for p in paths] if paths else None

    return {"data": absolute(args.data), "labels": args.labels and str(args.labels.resolve()), "val": absolute(args.val),
            "val_split": args.val_split, "skip_malformed": args.skip_malformed}


def _load(paths: str | list[str], labels: str | None, skip_malformed: bool, say) -> list:
    from fastyolo.datasets import load_dataset

    samples = []
    for path in [paths] if isinstance(paths, str) else paths:  # a str: a run saved before --data took several
        found, report = load_dataset(path, labels, skip_malformed=skip_malformed)
        say(report)
        samples += found
    return samples


def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as held:  # the run folder's lock, released when the run ends (or fails)
        return _run(args, held)


def _run(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    try:
        import torch  # noqa: F401

        from fastyolo.train.checkpoint import load_checkpoint
        from fastyolo.train.config import TrainConfig
        from fastyolo.train.engine import fit, split_samples
    except ImportError:
        raise MissingDependencyError("training needs torch: pip install 'fastyolo[train]'") from None

    _check_options(args)
    _check_out(args.out)
    _check_outside_data(args.out, args.data, args.val, args.labels)
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process:  # the other processes of a torchrun job write nothing: rank 0's lock covers them
        held.enter_context(lock_run_folder(args.out))
    last = args.out / "last.pt"
    if args.resume:
        if not last.is_file():
            raise FastYoloError(f"nothing to resume: {last} does not exist (start without --resume)")
        saved = load_checkpoint(last)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        saved["config"].setdefault("cell_order", "area")  # runs from before the option placed largest first
        saved["config"].setdefault("zoom", 1.0)  # and did not zoom in
        config = TrainConfig(**{k: v for k, v in saved["config"].items() if k in fields})
        config.milestones = tuple(config.milestones)
        config.device, config.workers = args.device, args.workers
        config.out = str(args.out)  # the folder resumed (and locked), wherever the run was started or moved from
        for name in ("amp", "cache", "cache_dir", "augment_on"):  # how the run executes (not what): may change
            if getattr(args, name) is not None:
                setattr(config, name, str(getattr(args, name)) if name == "cache_dir" else getattr(args, name))
        settings = config.extra
        if args.data:  # the data moved (or the run is resumed from another directory)
            settings.update({k: v for k, v in _settings(args).items() if k in ("data", "labels") and v})
        if args.epochs is not None and args.epochs > config.epochs:
            print(f"resume: extending the run from {config.epochs} to {args.epochs} epochs (the schedule is stretched)")
            config.epochs = args.epochs
        print(f"resume: settings from {last} (--data, a larger --epochs, --device, --workers, --amp, --cache and "
              "--augment-on may change)")
        _check_outside_data(args.out, settings["data"], settings["val"], settings["labels"])
    else:
        if last.is_file():
            raise FastYoloError(f"{args.out} holds a run ({last}): add --resume to continue it, or use another --out")
        _check_empty(args.out)
        if not args.data:
            raise FastYoloError("--data DIR is required (a folder with labels.csv or label_2/ and the images)")
        settings = _settings(args)
        config = TrainConfig(
            out=str(args.out), epochs=args.epochs or TrainConfig.epochs, batch=args.batch, backbone=args.backbone,
            head=args.head,
            pretrained=args.pretrained and str(args.pretrained), init=args.init and str(args.init),
            optimizer=args.optimizer, lr=args.lr,
            augment=not args.no_augment, dropout=args.dropout, seed=args.seed, workers=args.workers,
            device=args.device, eval_every=args.eval_every, min_size=args.min_size, extra=settings,
            amp=args.amp or TrainConfig.amp, cache=args.cache or TrainConfig.cache,
            cache_dir=args.cache_dir and str(args.cache_dir), augment_on=args.augment_on or TrainConfig.augment_on,
            source_weights=args.source_weights, class_balance=args.class_balance, mosaic=args.mosaic, zoom=args.zoom,
            cell_order=args.cell_order, box_loss=args.box_loss, clean_tail=args.clean_tail,
        )

    say = print if main_process else (lambda _m: None)
    samples = _load(settings["data"], settings["labels"], settings["skip_malformed"], say)
    held_out = "held-out frames"
    if settings["val"]:
        train, val = samples, _load(settings["val"], None, settings["skip_malformed"], say)
        shared = _training_frames(train, val)
        if val and shared == len(val):  # --val names the training frames: said, and named, as --val-split 0 is
            config.val_name = "train"
        elif shared:
            held_out = f"frames, {shared} of them training frames (not held out: their mAP flatters the model)"
    else:
        train, val = split_samples(samples, settings["val_split"], config.seed)
        if not val:
            val, config.val_name = train, "train"
    if not train:
        raise FastYoloError(f"no training frames in {settings['data']}")
    say(f"training on {len(train)} frames, validating on {len(val)} "
        f"{'(the training frames themselves)' if config.val_name == 'train' else held_out}; "
        f"{config.backbone}, {config.epochs} epochs, batch {config.batch}, {config.optimizer}")
    history = fit(config, train, val, resume=args.resume, stop_after=args.stop_after, log=say)
    if main_process and history:
        best = max((r for r in history if "val_map50" in r), key=lambda r: r["val_map50"], default=None)
        note = f"; best {config.val_name} mAP@0.5 {best['val_map50']:.3f} at epoch {best['epoch']}" if best else ""
        print(f"done: {args.out}/last.pt, best.pt, metrics.jsonl, curves.png{note}")
        print(f"export with: fastyolo export {args.out}/best.pt -o model.onnx")
    return 0
