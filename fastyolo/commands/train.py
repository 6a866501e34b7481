"""fastyolo train: train the detector on labelled frames (Udacity CSV or KITTI), with validation mAP and resume.

Every default comes from `fastyolo.train.config.TrainConfig` (torch-free, so the parser builds
without the [train] extra); the CLI only shows and passes them on.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from fastyolo.errors import FastYoloError, MissingDependencyError
from fastyolo.train.config import AMP_MODES, AUGMENT_ON, CACHE_MODES, CLASS_BALANCE

# Settings that define a run's data; --resume keeps them unless the command line gives new ones.
RUN_SETTINGS = ("data", "labels", "val", "val_split", "skip_malformed")
BACKBONES = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0")  # train/model.py BACKBONES (no torch here)


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
    p.add_argument("--mosaic", type=float, default=d["mosaic"], metavar="P",
                   help=f"chance that an augmented frame is a 2x2 mosaic of four (not in the clean tail) [{d['mosaic']}]")
    p.add_argument("--zoom", type=float, default=d["zoom"], metavar="MAX",
                   help=f"augmentation zooms in up to MAX (a random crop enlarged; 1: off) [{d['zoom']}]")
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
    try:
        import torch  # noqa: F401

        from fastyolo.train.checkpoint import load_checkpoint
        from fastyolo.train.config import TrainConfig
        from fastyolo.train.engine import fit, split_samples
    except ImportError:
        raise MissingDependencyError("training needs torch: pip install 'fastyolo[train]'") from None

    _check_options(args)
    _check_out(args.out)
    last = args.out / "last.pt"
    if args.resume:
        if not last.is_file():
            raise FastYoloError(f"nothing to resume: {last} does not exist (start without --resume)")
        saved = load_checkpoint(last)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        config = TrainConfig(**{k: v for k, v in saved["config"].items() if k in fields})
        config.milestones = tuple(config.milestones)
        config.device, config.workers = args.device, args.workers
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
    else:
        if last.is_file():
            raise FastYoloError(f"{args.out} holds a run ({last}): add --resume to continue it, or use another --out")
        if not args.data:
            raise FastYoloError("--data DIR is required (a folder with labels.csv or label_2/ and the images)")
        settings = _settings(args)
        config = TrainConfig(
            out=str(args.out), epochs=args.epochs or TrainConfig.epochs, batch=args.batch, backbone=args.backbone,
            pretrained=args.pretrained and str(args.pretrained), init=args.init and str(args.init),
            optimizer=args.optimizer, lr=args.lr,
            augment=not args.no_augment, dropout=args.dropout, seed=args.seed, workers=args.workers,
            device=args.device, eval_every=args.eval_every, min_size=args.min_size, extra=settings,
            amp=args.amp or TrainConfig.amp, cache=args.cache or TrainConfig.cache,
            cache_dir=args.cache_dir and str(args.cache_dir), augment_on=args.augment_on or TrainConfig.augment_on,
            source_weights=args.source_weights, class_balance=args.class_balance, mosaic=args.mosaic, zoom=args.zoom,
        )

    main_process = int(os.environ.get("RANK", "0")) == 0
    say = print if main_process else (lambda _m: None)
    samples = _load(settings["data"], settings["labels"], settings["skip_malformed"], say)
    if settings["val"]:
        train, val = samples, _load(settings["val"], None, settings["skip_malformed"], say)
    else:
        train, val = split_samples(samples, settings["val_split"], config.seed)
        if not val:
            val, config.val_name = train, "train"
    if not train:
        raise FastYoloError(f"no training frames in {settings['data']}")
    say(f"training on {len(train)} frames, validating on {len(val)} "
        f"{'(the training frames themselves)' if config.val_name == 'train' else 'held-out frames'}; "
        f"{config.backbone}, {config.epochs} epochs, batch {config.batch}, {config.optimizer}")
    history = fit(config, train, val, resume=args.resume, stop_after=args.stop_after, log=say)
    if main_process and history:
        best = max((r for r in history if "val_map50" in r), key=lambda r: r["val_map50"], default=None)
        note = f"; best {config.val_name} mAP@0.5 {best['val_map50']:.3f} at epoch {best['epoch']}" if best else ""
        print(f"done: {args.out}/last.pt, best.pt, metrics.jsonl, curves.png{note}")
        print(f"export with: fastyolo export {args.out}/best.pt -o model.onnx")
    return 0
