"""Are the ReID attacks converged at their published iteration counts?

The grid runs each metric attack with its paper's schedule (SMA: 15 steps of 1/255,
Bouniot's code; metric I-FGSM: Bai's min(eps + 4, 1.25 eps) steps of 1/255). A robustness
number is only as good as the attack behind it, so this script re-runs `sma` and
`metric-ifgsm` at eps 8/255 against the default grid's `none` and `metric-at` models
with more and finer steps, and prints mAP per schedule and the ratio of the two
defenses' attacked mAP (issue #4's target is 2x). A schedule that lowers mAP further
means the shorter one had not converged. Models come from the stage cache (`--cache`
the grid's: no training).

    .venv/bin/python benchmarks/reid_attack_convergence.py [--seeds 3] [--cache runs/cache]
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from common import CellRunner, add_runner_args, mean_std

from benchbench.cells import ComponentRef

DEFENSES = ("none", "metric-at")
# attack -> schedules as (steps, alpha in /255); the first is the attack's default
SCHEDULES = {
    "sma": [(15, 1.0), (60, 0.5), (120, 0.5)],
    "metric-ifgsm": [(10, 1.0), (60, 0.5), (120, 0.5)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    add_runner_args(parser)
    args = parser.parse_args()
    run = CellRunner(args)
    task = ComponentRef("reid-adversarial")
    mAP: dict[tuple[str, int, float, str], list[float]] = defaultdict(list)
    for attack, schedules in SCHEDULES.items():
        for steps, alpha in schedules:
            for defense in DEFENSES:
                for seed in range(args.seeds):
                    ref = ComponentRef(attack, {"eps": 8.0, "steps": steps, "alpha": alpha})
                    result = run("reid", task, ref, ComponentRef(defense), ("reid-rank",), seed)
                    value = result["metrics"]["reid-rank"]["mAP"]["value"]
                    mAP[(attack, steps, alpha, defense)].append(value)
                    print(f"{attack} {steps} x {alpha}/255 {defense} seed {seed}: mAP {value:.3f}", flush=True)

    print(f"\nmAP under attack (eps 8/255), mean ± std over {args.seeds} seeds; first row per attack = its default")
    print(f"{'attack':13} {'steps x alpha':>14} " + " ".join(f"{d:>14}" for d in DEFENSES) + "  metric-at/none")
    for attack, schedules in SCHEDULES.items():
        for steps, alpha in schedules:
            values = [mAP[(attack, steps, alpha, d)] for d in DEFENSES]
            ratio = statistics.fmean(values[1]) / statistics.fmean(values[0])
            print(f"{attack:13} {f'{steps} x {alpha:g}/255':>14} " + " ".join(f"{mean_std(v):>14}" for v in values)
                  + f"  {ratio:>13.2f}x")


if __name__ == "__main__":
    main()
