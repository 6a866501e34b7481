"""The optimizer step alone: torch's default implementation against the fused kernel (make_optimizer fuses AdamW).

    python bench/optimizer_step.py                       # ResNet-18 and -50, AdamW and SGD, on the CPU
    python bench/optimizer_step.py --device cuda --json out.json

The parameters of a YoloNet (channels_last, as training holds them) with random gradients; the median of
--steps timed steps after 3 untimed ones, each configuration in turn, --rounds times (medians of rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def step_ms(optimizer: torch.optim.Optimizer, device: torch.device, steps: int) -> float:
    for _ in range(3):
        optimizer.step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def plain_groups(optimizer: torch.optim.Optimizer) -> list[dict]:
    """Its parameter groups without the implementation choice, as fresh dicts (an optimizer fills its defaults
    into the dicts it is given)."""
    return [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in optimizer.param_groups]


def main(argv: list[str] | None = None) -> int:
    from fastyolo.train.model import BACKBONES, YoloNet
    from fastyolo.train.schedule import make_optimizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"], choices=BACKBONES)
    p.add_argument("--steps", type=int, default=15, help="timed steps per round [15]")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported [3]")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)
    if min(args.steps, args.rounds) < 1:
        p.error("--steps and --rounds must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA GPU")
    device = torch.device(args.device)
    rows = []
    for backbone in args.backbones:
        model = YoloNet(backbone).to(device).to(memory_format=torch.channels_last)
        for param in model.parameters():
            param.grad = torch.randn_like(param) * 1e-3
        for name in ("adam", "sgd"):
            chosen = make_optimizer(model, name)
            found: dict[str, list[float]] = {"default": [], "fused": []}
            for _ in range(args.rounds):
                default = type(chosen)(plain_groups(chosen))  # torch's own choice for the device
                found["default"].append(step_ms(default, device, args.steps))
                found["fused"].append(step_ms(type(chosen)(plain_groups(chosen), fused=True), device, args.steps))
            row = {"backbone": backbone, "optimizer": name, "device": device.type,
                   "make_optimizer_fuses": bool(chosen.defaults.get("fused")),
                   "ms_default": statistics.median(found["default"]), "ms_fused": statistics.median(found["fused"])}
            rows.append(row)
            print(f"{backbone:9s} {name:5s} {device.type}: torch default {row['ms_default']:.1f} ms, fused "
                  f"{row['ms_fused']:.1f} ms (make_optimizer: {'fused' if row['make_optimizer_fuses'] else 'default'})",
                  flush=True)
    if args.json:
        try:
            args.json.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                             "rows": rows}, indent=1) + "\n")
        except OSError as exc:
            print(f"optimizer_step: cannot write {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
