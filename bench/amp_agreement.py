"""Do bf16 autocast and fp32 train the same? The overfit benchmark (all 75 kitti_tiny frames, no
augmentation, validated on themselves) run once per precision, same seed, curves drawn together.

    python bench/amp_agreement.py                       # resnet18, 40 epochs, --amp off and bf16
    python bench/amp_agreement.py --epochs 80 --backbone resnet50

Writes bench/amp_agreement.png (training loss and training-set mAP@0.5 per epoch, both precisions)
and bench/artifacts/amp_agreement.json (both histories, per-epoch loss ratio, final mAPs, seconds).
bf16 on a CPU needs AMX (or avx512_bf16) to be fast; without it the bf16 run is slow but still valid.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "kitti_tiny"
LABELS = {"off": "fp32 (--amp off)", "bf16": "bf16 autocast (--amp bf16)", "fp16": "fp16 + loss scaling (--amp fp16)"}


def run(samples, amp: str, args: argparse.Namespace, out: Path) -> tuple[list[dict], float]:
    from fastyolo.train.config import TrainConfig
    from fastyolo.train.engine import fit

    config = TrainConfig(out=str(out), epochs=args.epochs, batch=args.batch, backbone=args.backbone, augment=False,
                         seed=args.seed, workers=0, device=args.device, eval_every=args.eval_every,
                         min_size=args.min_size, val_name="train", amp=amp)
    started = time.perf_counter()
    history = fit(config, samples, samples)
    return history, time.perf_counter() - started


def plot(histories: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 4))
    for amp, history in histories.items():
        ax_loss.plot([r["epoch"] for r in history], [r["train_loss"] for r in history], label=LABELS.get(amp, amp))
        rows = [r for r in history if "val_map50" in r]
        ax_map.plot([r["epoch"] for r in rows], [r["val_map50"] for r in rows], marker=".", label=LABELS.get(amp, amp))
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="training loss per image", title="loss")
    ax_map.set(xlabel="epoch", ylabel="mAP@0.5 on the training frames", title="mAP@0.5", ylim=(0, 1))
    for ax in (ax_loss, ax_map):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--min-size", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amps", nargs="+", default=["off", "bf16"], help="precisions to compare [off bf16]")
    args = p.parse_args(argv)
    if not (args.data / "labels.csv").is_file():
        print(f"amp_agreement: no dataset at {args.data} (pass --data)", file=sys.stderr)
        return 2

    import torch

    from fastyolo.datasets import load_dataset

    samples, _ = load_dataset(args.data)
    histories, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for amp in args.amps:
            print(f"== --amp {amp}", flush=True)
            histories[amp], seconds[amp] = run(samples, amp, args, Path(tmp) / amp)
    first, *others = args.amps
    ratios = {amp: [b["train_loss"] / a["train_loss"] for a, b in zip(histories[first], histories[amp], strict=True)]
              for amp in others}
    final = {amp: next((r["val_map50"] for r in reversed(h) if "val_map50" in r), None) for amp, h in histories.items()}
    title = (f"{args.backbone}, {len(samples)} kitti_tiny frames, no augmentation, batch {args.batch}, "
             f"{args.epochs} epochs, torch {torch.__version__}")
    plot(histories, HERE / "amp_agreement.png", title)
    result = {"title": title, "final_map50": final, "seconds": seconds, "loss_ratio_vs_" + first: ratios,
              "histories": histories}
    (HERE / "artifacts").mkdir(exist_ok=True)
    (HERE / "artifacts" / "amp_agreement.json").write_text(json.dumps(result, indent=1, default=float))
    for amp in args.amps:
        print(f"--amp {amp}: final training-set mAP@0.5 {final[amp]:.3f}, final loss "
              f"{histories[amp][-1]['train_loss']:.3f}, {seconds[amp]:.0f} s")
    for amp, r in ratios.items():
        print(f"loss {amp} / {first} per epoch: min {min(r):.3f}, max {max(r):.3f}, last {r[-1]:.3f}")
    print(f"wrote {HERE / 'amp_agreement.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
