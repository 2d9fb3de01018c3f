"""Why the re-matching defenses lose utility in the default CPU budget: RoCLIP's two
ingredients, alone and together, on clean data; then the variant that learns, under BadNets.

RoCLIP = augmentations (SimCLR images + EDA captions) + nearest-pool re-matching every
other epoch. Part 1 runs, for one seed, the clean (attack ``none``) cell of ``none`` and
of RoCLIP with matching switched off, with augmentation switched off, as published, and
with re-matching starting only after a warm-up of 5 plain epochs. Part 2 runs the
BadNets cell of ``none`` and of RoCLIP and OTCCLIP with that warm-up and no
augmentation. It prints zero-shot and linear-probe top-1 (and BadNets ASR) for each.
One seed: a pointer for choosing the protocol budget, not a leaderboard.

    .venv/bin/python benchmarks/clip_defense_budget.py [--seed 0] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import torch

from benchbench.cells import CellSpec, ComponentRef
from benchbench.registry import load_registry
from benchbench.runner import Environment, run_cell

WARM_UP = {"first_match_epoch": 6, "image_augmentation": "none", "eda": 0.0}
VARIANTS = {
    "none (standard CLIP)": ComponentRef("none"),
    "roclip, no re-matching (augmentation only)": ComponentRef("roclip", {"match_every": 1000}),
    "roclip, no augmentation (re-matching only)": ComponentRef("roclip", {"image_augmentation": "none", "eda": 0.0}),
    "roclip (both, as in the grid)": ComponentRef("roclip"),
    "roclip, re-matching from epoch 6": ComponentRef("roclip", {"first_match_epoch": 6}),
    "roclip, re-matching from epoch 6, no augmentation": ComponentRef("roclip", WARM_UP),
}
UNDER_BADNETS = {
    "none (standard CLIP)": ComponentRef("none"),
    "roclip, re-matching from epoch 6, no augmentation": ComponentRef("roclip", WARM_UP),
    "otcclip, re-matching from epoch 6, no augmentation": ComponentRef("otcclip", WARM_UP),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default="runs/cache", help="shares the default grid's stages")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry, env = load_registry(), Environment(cache_root=args.cache, progress=False)
    for attack, variants in (("none", VARIANTS), ("badnets", UNDER_BADNETS)):
        print(f"default preset, attack {attack}, seed {args.seed}")
        for label, defense in variants.items():
            start = time.perf_counter()
            evaluators = ("zero-shot", "linear-probe") + (("asr",) if attack != "none" else ())
            spec = CellSpec("clip", ComponentRef("clip-poisoning"), ComponentRef(attack), defense,
                            tuple(ComponentRef(e) for e in evaluators), args.seed, "default")
            result = run_cell(spec.to_dict(), env, registry)
            if result["status"] != "ok":
                raise SystemExit(f"{label} failed:\n{result['traceback']}")
            m = result["metrics"]
            asr = f"  ASR {m['asr']['asr']['value']:.3f}" if "asr" in m else ""
            print(f"{label:50s} zero-shot top-1 {m['zero-shot']['top1']['value']:.3f}  linear-probe top-1 "
                  f"{m['linear-probe']['top1']['value']:.3f}{asr}  ({time.perf_counter() - start:.0f} s)", flush=True)

if __name__ == "__main__":
    main()
