"""Issue 20's recipe runs drawn: Car AP@0.5 on each held-out set, one dot per seed, a bar at the mean.

    python bench/recipe_plot.py --out bench/artifacts/recipe_issue20.png

Reads only the committed evaluation JSON (bench/artifacts/real_model_eval_issue20*.json, written by
`python bench/real_model.py evaluate`), so anyone can redraw it; RECIPES says which run is which.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SETS = (("highway_heldout", "highway, held-out segments"), ("pandaset_left", "PandaSet left camera (city)"),
        ("kitti_tiny", "KITTI"), ("kitti_tiny_tiles", "KITTI, tiles auto"))
TARGETS = {"pandaset_left": 0.45, "kitti_tiny": 0.15, "kitti_tiny_tiles": 0.3}  # issue 20's Car AP@0.5 targets
ZOOM_JSON = "real_model_eval_issue20_zoom.json"  # earlier sessions' runs, under "models"
DEFAULT_JSON = "real_model_eval_issue20_zoom_default.json"  # the third session's runs
SHARP_GIOU_JSON = "real_model_eval_issue20_sharp_giou.json"  # the fourth session's runs
CLEAN_TAIL_JSON = "real_model_eval_issue20_clean_tail.json"  # the fifth and sixth sessions' runs


def _runs(name: str, *runs: str) -> list[tuple[str, str]]:
    """(artifact file, run key in it) for each seed; bench/real_model.py names a run by its checkpoint path."""
    return [(name, run if run.startswith("models/") else f"runs/train/{run}/last.pt") for run in runs]


# recipe label: one (file, key) per seed; all on A6's 531 frames, 15 epochs unless named, fp32
RECIPES = {
    "A6 (no zoom)": _runs(ZOOM_JSON, "models/A6", "models/A6 seed 1", "models/A6 seed 2")
    + _runs("real_model_eval_issue20_soup.json", "a6i1", "a6i2"),
    "cell order rare": _runs("real_model_eval_issue20_cell_order.json", "a6rare", "a6rare1"),
    "mosaic 0.5": _runs("real_model_eval_issue20_mosaic_zoom.json", "a6mos", "a6mos1"),
    "mosaic 0.5 + zoom 2": _runs("real_model_eval_issue20_mosaic_zoom.json", "a6mz"),
    "zoom 2 (default)": _runs("real_model_eval_issue20_mosaic_zoom.json", "a6zoom", "a6zoom1")
    + _runs(DEFAULT_JSON, "a6zoom2s2") + _runs(CLEAN_TAIL_JSON, "ct03s3"),
    "zoom 3": _runs(DEFAULT_JSON, "a6zoom3", "a6zoom3s1"),
    "zoom 2, 10 epochs": _runs(DEFAULT_JSON, "a6zoom2e10", "a6zoom2e10s1"),
    "zoom 2, 25 epochs": _runs(DEFAULT_JSON, "a6zoom2e25"),
    "sharp zoom 2 (--cache off)": _runs(SHARP_GIOU_JSON, "sharpz2s0"),
    "sharp zoom 3 (--cache off)": _runs(SHARP_GIOU_JSON, "sharpz3s0", "sharpz3s1", "sharpz3s2"),
    "zoom 2.5": _runs(SHARP_GIOU_JSON, "z25s0", "z25s1"),
    "box loss GIoU": _runs(SHARP_GIOU_JSON, "giou_s0", "giou_s1", "giou_s2"),
    "clean tail 0.15": _runs(CLEAN_TAIL_JSON, "ct015s0", "ct015s1", "ct015s2", "ct015s3"),
    "clean tail 0": _runs(CLEAN_TAIL_JSON, "ct0s0", "ct0s1", "ct0s2", "ct0s3"),
    "ResNet-18, scratch": _runs("real_model_eval_issue20_resnets.json", "a6r18"),
    "ResNet-50, scratch": _runs("real_model_eval_issue20_resnets.json", "a6r50"),
}


def load(artifacts: Path = ARTIFACTS) -> dict[str, list[dict[str, float]]]:
    """{recipe: [{set: Car AP50} per seed]} from the JSON files; a missing file or run is one clear error."""
    cache: dict[str, dict] = {}
    out: dict[str, list[dict[str, float]]] = {}
    for recipe, runs in RECIPES.items():
        out[recipe] = []
        for name, key in runs:
            if name not in cache:
                path = artifacts / name
                if not path.is_file():
                    raise FileNotFoundError(f"{path} is missing (written by bench/real_model.py evaluate)")
                cache[name] = json.loads(path.read_text())
            entry = cache[name]
            for part in key.split("/") if key.startswith("models/") else [key]:
                if part not in entry:
                    raise KeyError(f"{name} has no run {key!r}")
                entry = entry[part]
            out[recipe].append({s: entry[s]["ap50_Car"] for s, _ in SETS})
    return out


def plot(results: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SETS), figsize=(4.4 * len(SETS), 4.8), sharey=False)
    names = list(results)
    for ax, (key, title) in zip(axes, SETS, strict=True):
        for i, recipe in enumerate(names):
            values = [r[key] for r in results[recipe]]
            ax.bar(i, sum(values) / len(values), color="C0" if "default" not in recipe else "C1", alpha=0.35)
            ax.plot([i] * len(values), values, "o", color="k", markersize=4)
        if key in TARGETS:
            ax.axhline(TARGETS[key], color="C3", linestyle=":", label="issue's target")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 1 if key == "highway_heldout" else 0.7)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Car AP@0.5 (fp32, last epoch)")
    fig.suptitle("Issue 20: each recipe change on data the runs never trained on (dots: seeds, bars: mean)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ARTIFACTS / "recipe_issue20.png")
    args = parser.parse_args()
    try:
        results = load()
    except (FileNotFoundError, KeyError) as e:
        sys.exit(f"bench/recipe_plot.py: {e.args[0]}")
    for recipe, runs in results.items():
        means = {s: sum(r[s] for r in runs) / len(runs) for s, _ in SETS}
        print(f"{recipe:22s} {len(runs)} run(s): " + ", ".join(f"{s} {v:.3f}" for s, v in means.items()))
    try:
        plot(results, args.out)
    except OSError as e:
        sys.exit(f"bench/recipe_plot.py: cannot write {args.out}: {e.strerror}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
