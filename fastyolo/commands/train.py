"""fastyolo train: train the detector on labelled frames (Udacity CSV or KITTI), with validation mAP and resume."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from fastyolo.errors import FastYoloError, MissingDependencyError

# Settings that define a run; --resume takes them from last.pt (device and workers may change).
RUN_SETTINGS = ("data", "labels", "val", "val_split", "skip_malformed")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train on labelled frames (needs the [train] extra)",
        description="Train the YOLO network. Multi-GPU: torchrun --nproc-per-node K -m fastyolo.cli train ...",
    )
    p.add_argument("--data", type=Path, help="folder with labels.csv or label_2/ and the images")
    p.add_argument("--labels", type=Path, help="labels file, if not DATA/labels.csv")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--val-split", type=float, default=0.2,
                       help="fraction of DATA held out for validation; 0 validates on the training frames [0.2]")
    split.add_argument("--val", type=Path, help="separate validation folder (instead of --val-split)")
    p.add_argument("--out", type=Path, required=True, help="run folder: last.pt, best.pt, metrics.jsonl, curves.png")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch", type=int, default=16, help="images per step (per process under torchrun) [16]")
    p.add_argument("--backbone", default="resnet50", choices=("resnet18", "resnet34", "resnet50"))
    p.add_argument("--pretrained", type=Path, help="torchvision ImageNet ResNet state dict (.pth) for the backbone")
    p.add_argument("--init", type=Path, help="fastyolo checkpoint (.pt) to fine-tune from, e.g. an earlier best.pt")
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"),
                   help="adam: AdamW 3e-4 (learns far faster from scratch); sgd: the paper's SGD 1e-2 [adam]")
    p.add_argument("--lr", type=float, help="base learning rate (warm-up from lr/10, /10 at 60%%, 80%%, 90%%)")
    p.add_argument("--no-augment", action="store_true", help="no translate/scale/HSV/flip augmentation")
    p.add_argument("--dropout", type=float, default=0.5, help="head dropout while training (the network is the same) [0.5]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda [auto]")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader worker processes")
    p.add_argument("--eval-every", type=int, default=1, help="validate every N epochs [1]")
    p.add_argument("--min-size", type=float, default=0.0, help="mAP ignores boxes under this many network-input pixels")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--stop-after", type=int, help="stop cleanly after this epoch (continue later with --resume)")
    p.add_argument("--skip-malformed", action="store_true", help="skip malformed label rows instead of failing")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401

        from fastyolo.train.checkpoint import load_checkpoint
        from fastyolo.train.engine import TrainConfig, fit, split_samples
    except ImportError:
        raise MissingDependencyError("training needs torch: pip install 'fastyolo[train]'") from None
    from fastyolo.datasets import load_dataset

    last = args.out / "last.pt"
    if args.resume:
        if not last.is_file():
            raise FastYoloError(f"nothing to resume: {last} does not exist (start without --resume)")
        saved = load_checkpoint(last)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        config = TrainConfig(**{k: v for k, v in saved["config"].items() if k in fields})
        config.milestones = tuple(config.milestones)
        config.device, config.workers = args.device, args.workers
        settings = config.extra
        print(f"resume: settings from {last} (only --device and --workers are taken from this command line)")
    else:
        if last.is_file():
            raise FastYoloError(f"{args.out} holds a run ({last}): add --resume to continue it, or use another --out")
        if args.data is None:
            raise FastYoloError("--data DIR is required (a folder with labels.csv or label_2/ and the images)")
        if args.epochs < 1 or args.batch < 1:
            raise FastYoloError(f"--epochs and --batch must be at least 1, got {args.epochs} and {args.batch}")
        settings = {"data": str(args.data), "labels": args.labels and str(args.labels), "val": args.val and str(args.val),
                    "val_split": args.val_split, "skip_malformed": args.skip_malformed}
        config = TrainConfig(
            out=str(args.out), epochs=args.epochs, batch=args.batch, backbone=args.backbone,
            pretrained=args.pretrained and str(args.pretrained), init=args.init and str(args.init),
            optimizer=args.optimizer, lr=args.lr,
            augment=not args.no_augment, dropout=args.dropout, seed=args.seed, workers=args.workers,
            device=args.device, eval_every=args.eval_every, min_size=args.min_size, extra=settings,
        )

    samples, report = load_dataset(settings["data"], settings["labels"], skip_malformed=settings["skip_malformed"])
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process:
        print(report)
    if settings["val"]:
        train, (val, val_report) = samples, load_dataset(settings["val"], skip_malformed=settings["skip_malformed"])
        if main_process:
            print(val_report)
    else:
        train, val = split_samples(samples, settings["val_split"], config.seed)
        if not val:
            val, config.val_name = train, "train"
    if not train:
        raise FastYoloError(f"no training frames in {settings['data']}")
    if main_process:
        print(f"training on {len(train)} frames, validating on {len(val)} "
              f"{'(the training frames themselves)' if config.val_name == 'train' else 'held-out frames'}; "
              f"{config.backbone}, {config.epochs} epochs, batch {config.batch}, {config.optimizer}")
    history = fit(config, train, val, resume=args.resume, stop_after=args.stop_after)
    if main_process and history:
        best = max((r for r in history if "val_map50" in r), key=lambda r: r["val_map50"], default=None)
        note = f"; best {config.val_name} mAP@0.5 {best['val_map50']:.3f} at epoch {best['epoch']}" if best else ""
        print(f"done: {args.out}/last.pt, best.pt, metrics.jsonl, curves.png{note}")
        print(f"export with: fastyolo export {args.out}/best.pt -o model.onnx")
    return 0
