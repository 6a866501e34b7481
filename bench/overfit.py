"""Proof that training works: overfit all 75 kitti_tiny frames from scratch on the CPU.

Trains until training-set mAP@0.5 (boxes under --min-size network-input pixels ignored) reaches
--target, then checks the result through the real inference path: ONNX export, fastyolo.Detector,
fastyolo.metrics.evaluate, and reports it beside the all-boxes figure.

    python bench/overfit.py                      # resnet50, writes bench/artifacts/overfit.{pt,onnx}
    python bench/overfit.py --backbone resnet18  # ~4x faster
    python bench/overfit.py --resume             # continue an interrupted run

Deterministic for a given seed and machine (no augmentation, no dropout; torch CPU kernels).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "kitti_tiny"
ARTIFACTS = HERE / "artifacts"


def detector_map(onnx_path: Path, samples, min_size: float) -> dict:
    """mAP of the exported model through fastyolo.Detector (OpenVINO), as a user would measure it."""
    from fastyolo import Detector
    from fastyolo.metrics import evaluate

    detector = Detector(onnx_path, conf=0.01, iou=0.45, top_k=100)
    predictions = [detector.detect(cv2.imread(str(s.image_path))) for s in samples]
    return evaluate(predictions, samples, min_size=min_size)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="kitti_tiny folder [../shared/data/kitti_tiny]")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--epochs", type=int, default=120, help="schedule length; stops early at --target")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    p.add_argument("--lr", type=float, default=None, help="base learning rate [optimizer default: AdamW 3e-4, SGD 1e-2]")
    p.add_argument("--min-size", type=float, default=6.0, help="ignore boxes under this many network-input pixels")
    p.add_argument("--target", type=float, default=0.9, help="stop when training-set mAP@0.5 reaches this")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--freeze-bn", type=float, default=1.0, help="fraction of epochs after which BatchNorm stats freeze")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ARTIFACTS / "overfit_run", help="run directory (last.pt, metrics)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", type=Path, help="start from this checkpoint's weights (fresh optimizer and schedule)")
    p.add_argument("--evaluate-only", action="store_true",
                   help="no training: export and evaluate the best.pt of an existing (e.g. interrupted) run in --out")
    p.add_argument("--name", default="overfit", help="artifact name: bench/artifacts/NAME.pt / .onnx")
    args = p.parse_args(argv)

    import torch
    from fastyolo.train.checkpoint import load_checkpoint, load_model
    from fastyolo.train.engine import TrainConfig, fit
    from fastyolo.train.export import export_onnx

    from fastyolo.datasets import load_dataset

    if not (args.data / "labels.csv").is_file():
        print(f"overfit: no kitti_tiny at {args.data} (pass --data)", file=sys.stderr)
        return 2
    samples, report = load_dataset(args.data)
    print(report)
    config = TrainConfig(
        out=str(args.out), epochs=args.epochs, batch=args.batch, backbone=args.backbone, optimizer=args.optimizer,
        lr=args.lr, augment=False, dropout=0.0, freeze_bn=args.freeze_bn, seed=args.seed,
        init=args.init and str(args.init), workers=0, device="cpu",
        eval_every=args.eval_every, min_size=args.min_size, val_name="train",
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {config}")
    started = time.perf_counter()
    if args.evaluate_only:
        history = load_checkpoint(args.out / "last.pt")["history"]
    else:
        history = fit(config, samples, samples, resume=args.resume, target_map=args.target)
    seconds = time.perf_counter() - started

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ckpt = ARTIFACTS / f"{args.name}.pt"
    shutil.copyfile(args.out / "best.pt", ckpt)
    onnx_path = ARTIFACTS / f"{args.name}.onnx"
    diff = export_onnx(load_model(ckpt), onnx_path, untrained=False,
                       extra_metadata={"fastyolo.trained_on": "kitti_tiny 75 frames (overfit bench)"})
    strict = detector_map(onnx_path, samples, args.min_size)
    every = detector_map(onnx_path, samples, 0.0)
    best = max(history, key=lambda r: r.get("val_map50", -1))
    result = {
        "backbone": args.backbone, "optimizer": args.optimizer, "epochs_run": len(history),
        "best_epoch": best["epoch"], "train_seconds": round(sum(r["seconds"] for r in history), 1),
        "wall_seconds_this_call": round(seconds, 1),
        "detector_map50_min_size": strict["map50"], "detector_map50_95_min_size": strict["map50_95"],
        "min_size": args.min_size, "boxes_evaluated": strict["boxes_evaluated"], "boxes_ignored": strict["boxes_ignored"],
        "detector_map50_all_boxes": every["map50"], "detector_map50_95_all_boxes": every["map50_95"],
        "per_class_min_size": strict["per_class"], "onnx_vs_torch_max_abs_diff": diff,
        "checkpoint": str(ckpt), "onnx": str(onnx_path),
    }
    (ARTIFACTS / f"{args.name}_result.json").write_text(json.dumps(result, indent=2, default=float))
    shutil.copyfile(args.out / "curves.png", HERE / f"{args.name}_curves.png")
    print(json.dumps(result, indent=2, default=float))
    ok = strict["map50"] is not None and strict["map50"] >= args.target
    print(f"{'reached' if ok else 'did NOT reach'} training-set mAP@0.5 {args.target} (min-size {args.min_size}) "
          f"through the Detector: {strict['map50']:.3f} (all boxes {every['map50']:.3f})")
    np.set_printoptions(precision=3)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
