"""Does a training step make the host wait for the GPU? Steps of the real engine under torch's sync debug mode.

A step that waits (a `.item()`, a copy from pageable memory, a boolean index) stops the host from
queueing the next kernels while the GPU works: the GPU idles for the host's launch time of every
step. `torch.cuda.set_sync_debug_mode("warn")` reports each such wait; this runs
`fastyolo train`'s own step (engine._Run: its DataLoader, `_batch_to`, the model, the loss, AdamW,
the running loss sums) on real frames, after 2 warm-up steps, once with augmentation in the
DataLoader workers and once on the device, and lists where the host waited (file:line, count).
(The loop reads the loss sums twice a second on purpose; that read is outside the step.)

    python bench/train_sync_check.py --data .device/kitti_tiny --json $OUT/train_sync_check.json
    python bench/train_sync_check.py --device cpu     # the plumbing on a CPU (no sync mode there)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "kitti_tiny"
WARMUP = 2


def _where(stack: list[traceback.FrameSummary]) -> str:
    """The innermost frame of fastyolo's code (else the innermost frame) as file:line code."""
    ours = [f for f in stack if "fastyolo" in f.filename or "/train/" in f.filename or "/kernels/" in f.filename]
    frame = (ours or stack)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} {frame.line}"


def check(mode: str, train, val, device: str, backbone: str, batch: int, steps: int) -> dict:
    from fastyolo.train.config import TrainConfig
    from fastyolo.train.engine import LOSS_PARTS, Distributed, _Run

    with tempfile.TemporaryDirectory(prefix="sync-check-") as out:
        config = TrainConfig(out=out, backbone=backbone, batch=batch, epochs=1, device=device, augment_on=mode,
                             workers=min(4, TrainConfig.workers), pretrained=None)
        run = _Run(config, train, val, Distributed(), False, lambda _msg: None)
        run.batches.plan([(0, True)])  # one augmented epoch
        running = torch.zeros(len(LOSS_PARTS) + 1, device=run.device, dtype=torch.float64)
        sums = {k: 0.0 for k in ("loss", *LOSS_PARTS, "images", "dropped")}
        batches = iter(run.loader)
        cuda = run.device.type == "cuda"
        result = {"mode": mode, "backbone": backbone, "batch": batch, "precision": run.precision.name,
                  "augmented_on_device": run.augmenter is not None, "steps_checked": 0}
        waits: dict[str, int] = {}

        def record(message, category, filename, lineno, file=None, line=None):
            # torch's sync warnings arrive here in the thread that waited, with its Python stack still live
            if "synchroniz" in str(message).lower():
                key = _where(traceback.extract_stack()[:-1])
                waits[key] = waits.get(key, 0) + 1

        try:
            for _ in range(WARMUP):
                run._step(next(batches), running, sums)
            if cuda:
                torch.cuda.synchronize(run.device)
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = record
                if cuda:
                    torch.cuda.set_sync_debug_mode("warn")
                try:
                    for _ in range(steps):
                        run._step(next(batches), running, sums)
                        result["steps_checked"] += 1
                finally:
                    if cuda:
                        torch.cuda.set_sync_debug_mode("default")
        finally:
            run.close()
        # None on a CPU: there is no sync debug mode to ask, so only the plumbing ran
        result["waits"] = (waits or {}) if cuda else None
        result["loss_finite"] = bool(torch.isfinite(running).all())
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled frames [../shared/data/kitti_tiny]")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="[cuda]")
    p.add_argument("--backbone", default="resnet50", help="[resnet50]")
    p.add_argument("--batch", type=int, default=8, help="[8]")
    p.add_argument("--steps", type=int, default=4, help="steps checked after the warm-up [4]")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("train_sync_check: torch sees no CUDA GPU (--device cpu checks the plumbing)", file=sys.stderr)
        return 2
    from fastyolo.train.engine import split_samples

    from fastyolo.datasets import load_dataset

    samples, _ = load_dataset(args.data)
    train, val = split_samples(samples, 0.2, 0)
    if len(train) < (WARMUP + args.steps) * args.batch:
        p.error(f"{len(train)} training frames: too few for {WARMUP + args.steps} batches of {args.batch}")
    results = [check(mode, train, val, args.device, args.backbone, args.batch, args.steps)
               for mode in ("workers", "device")]
    for r in results:
        if r["waits"] is None:
            verdict = "ran (the sync debug mode needs CUDA: plumbing only)"
        else:
            verdict = "; ".join(f"WAITS {n}x at {where}" for where, n in r["waits"].items()) or "no wait"
        print(f"{args.device} {r['backbone']} {r['precision']}, augmentation on the "
              f"{'device' if r['augmented_on_device'] else 'workers'}: {r['steps_checked']} steps, {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "results": results}, indent=1) + "\n")
    return 1 if any(r["waits"] for r in results) else 0  # {} and None: nothing found


if __name__ == "__main__":
    sys.exit(main())
