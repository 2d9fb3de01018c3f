"""How the CLIP defenses' ``default`` (CPU) presets were chosen: each ingredient alone and
together, on clean data and under BadNets, for one seed.

RoCLIP as published = augmentations (SimCLR images + EDA captions) + nearest-pool
re-matching every other epoch from epoch 2. Part 1 runs the clean (attack ``none``)
cell of ``none`` and of RoCLIP as published, with each ingredient switched off, with
re-matching only after a warm-up of 5 plain epochs, and with both changes (the default
preset). Part 2 runs the BadNets cell of every defense at its default preset, next to
the variants we measured before choosing: SafeCLIP with its published warm-up (2
unimodal epochs, 1 CLIP epoch at lr / 100) and with the in-modal epoch kept, CleanCLIP
with a 10x and a 30-epoch x 10 fine-tune. It prints zero-shot and linear-probe top-1
(and BadNets ASR) for each. One seed: a pointer for choosing the protocol budget, not
a leaderboard.

    .venv/bin/python benchmarks/clip_defense_budget.py [--seed 0] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

from common import CellRunner, add_runner_args

from benchbench.cells import ComponentRef
from benchbench.clip.augment import NO_AUGMENTATION

PUBLISHED = {"first_match_epoch": 2, "image_augmentation": "simclr", "eda": 0.1, "augment_group": 16}
SAFECLIP_PUBLISHED_WARM_UP = {"inmodal_warmup": 2, "multimodal_warmup": 1, "warmup_lr_factor": 0.01,
                              "image_augmentation": "simclr", "eda": 0.1, "augment_group": 16, "ratio_step": 0.03}
CLEAN = {
    "none (standard CLIP)": ComponentRef("none"),
    "roclip as published (augmentation, re-match from 2)": ComponentRef("roclip", PUBLISHED),
    "roclip, no re-matching (augmentation only)": ComponentRef("roclip", {**PUBLISHED, "match_every": 1000}),
    "roclip, no augmentation (re-matching from 2 only)": ComponentRef("roclip", {**PUBLISHED, **NO_AUGMENTATION}),
    "roclip, re-matching from epoch 6, augmentation": ComponentRef("roclip", {**PUBLISHED, "first_match_epoch": 6}),
    "roclip default preset (from 6, no augmentation)": ComponentRef("roclip"),
}
UNDER_BADNETS = {
    "none (standard CLIP)": ComponentRef("none"),
    "roclip default preset": ComponentRef("roclip"),
    "otcclip default preset": ComponentRef("otcclip"),
    "safeclip default preset (5 CLIP epochs, then split)": ComponentRef("safeclip"),
    "safeclip, published warm-up (2 in-modal + 1 at lr/100)": ComponentRef("safeclip", SAFECLIP_PUBLISHED_WARM_UP),
    "safeclip, 1 in-modal + 4 CLIP epochs, then split": ComponentRef("safeclip", {"inmodal_warmup": 1,
                                                                                 "multimodal_warmup": 4}),
    "cleanclip default preset (fine-tune lr 1e-4)": ComponentRef("cleanclip"),
    "cleanclip, fine-tune lr 1e-3": ComponentRef("cleanclip", {"finetune_lr": 1e-3}),
    "cleanclip, fine-tune lr 1e-3 for 30 epochs": ComponentRef("cleanclip", {"finetune_lr": 1e-3,
                                                                             "finetune_epochs": 30}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    add_runner_args(parser)
    args = parser.parse_args()
    run = CellRunner(args)
    for attack, variants in (("none", CLEAN), ("badnets", UNDER_BADNETS)):
        print(f"default preset, attack {attack}, seed {args.seed}")
        for label, defense in variants.items():
            start = time.perf_counter()
            evaluators = ("zero-shot", "linear-probe") + (("asr",) if attack != "none" else ())
            m = run("clip", ComponentRef("clip-poisoning"), ComponentRef(attack), defense, evaluators,
                    args.seed)["metrics"]
            asr = f"  ASR {m['asr']['asr']['value']:.3f}" if "asr" in m else ""
            print(f"{label:56s} zero-shot top-1 {m['zero-shot']['top1']['value']:.3f}  linear-probe top-1 "
                  f"{m['linear-probe']['top1']['value']:.3f}{asr}  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
