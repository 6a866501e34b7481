"""The optimizer step alone: torch's default implementation against the fused kernel that make_optimizer picks.

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


def main(argv: list[str] | None = None) -> int:
    from fastyolo.train.model import YoloNet
    from fastyolo.train.schedule import make_optimizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for backbone in args.backbones:
        model = YoloNet(backbone).to(device).to(memory_format=torch.channels_last)
        for param in model.parameters():
            param.grad = torch.randn_like(param) * 1e-3
        for name in ("adam", "sgd"):
            found: dict[str, list[float]] = {"default": [], "fused": []}
            for _ in range(args.rounds):
                fused = make_optimizer(model, name)
                groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in fused.param_groups]
                default = type(fused)(groups) if fused.defaults.get("fused") else None  # torch's own choice
                found["fused"].append(step_ms(fused, device, args.steps))
                if default is not None:
                    found["default"].append(step_ms(default, device, args.steps))
            row = {"backbone": backbone, "optimizer": name, "device": device.type,
                   "fused": bool(make_optimizer(model, name).defaults.get("fused")),
                   "ms_default": statistics.median(found["default"]) if found["default"] else None,
                   "ms_make_optimizer": statistics.median(found["fused"])}
            rows.append(row)
            default_ms = "-" if row["ms_default"] is None else f"{row['ms_default']:.1f}"
            print(f"{backbone:9s} {name:5s} {device.type}: torch default {default_ms} ms, make_optimizer "
                  f"({'fused' if row['fused'] else 'not fused'}) {row['ms_make_optimizer']:.1f} ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                         "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
