"""Why the re-matching defenses lose utility in the default CPU budget: RoCLIP's two
ingredients, alone and together, on clean data.

RoCLIP = augmentations (SimCLR images + EDA captions) + nearest-pool re-matching every
other epoch. This runs, for one seed, the clean (attack ``none``) cell of ``none`` and of
RoCLIP with matching switched off, with augmentation switched off, as published, and
with re-matching starting only after a warm-up of 5 plain epochs, and prints clean
zero-shot and linear-probe top-1 for each.

    .venv/bin/python benchmarks/clip_defense_budget.py [--seed 0] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import torch

from benchbench.cells import CellSpec, ComponentRef
from benchbench.registry import load_registry
from benchbench.runner import Environment, run_cell

VARIANTS = {
    "none (standard CLIP)": ComponentRef("none"),
    "roclip, no re-matching (augmentation only)": ComponentRef("roclip", {"match_every": 1000}),
    "roclip, no augmentation (re-matching only)": ComponentRef("roclip", {"image_augmentation": "none", "eda": 0.0}),
    "roclip (both, as in the grid)": ComponentRef("roclip"),
    "roclip, re-matching from epoch 6": ComponentRef("roclip", {"first_match_epoch": 6}),
    "roclip, re-matching from epoch 6, no augmentation": ComponentRef(
        "roclip", {"first_match_epoch": 6, "image_augmentation": "none", "eda": 0.0}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default="runs/cache", help="shares the default grid's stages")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry, env = load_registry(), Environment(cache_root=args.cache, progress=False)
    print(f"default preset, attack none, seed {args.seed}")
    for label, defense in VARIANTS.items():
        start = time.perf_counter()
        spec = CellSpec("clip", ComponentRef("clip-poisoning"), ComponentRef("none"), defense,
                        (ComponentRef("zero-shot"), ComponentRef("linear-probe")), args.seed, "default")
        result = run_cell(spec.to_dict(), env, registry)
        if result["status"] != "ok":
            raise SystemExit(f"{label} failed:\n{result['traceback']}")
        m = result["metrics"]
        print(f"{label:45s} zero-shot top-1 {m['zero-shot']['top1']['value']:.3f}  linear-probe top-1 "
              f"{m['linear-probe']['top1']['value']:.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
