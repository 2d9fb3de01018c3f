"""Does `metric-at` reach twice `none`'s attacked mAP with a longer training budget?

The default ReID protocol trains every defense for 10 epochs. This script trains
`none` and `metric-at` (default preset) for 10, 20 and 40 epochs, per seed, and
measures mAP on clean queries and under `sma` and `metric-ifgsm` (eps 8/255), the two
attacks the acceptance target names. It prints mean ± std over seeds, the ratio of
`metric-at`'s attacked mAP to `none`'s at the same budget, the clean-mAP cost, and
the wall time of the cell that trained each model ("cached" when every model was
already in the stage cache; each model's ``train_log.json`` there keeps its epoch
times). The 10-epoch models are the default grid's (a stage cache hit when `--cache`
is the grid's).

    .venv/bin/python benchmarks/reid_budget.py [--seeds 3] [--epochs 10 20 40] [--cache runs/cache]
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from common import CellRunner, add_runner_args, mean_std

from benchbench.cells import ComponentRef

DEFENSES = ("none", "metric-at")
ATTACKS = ("none", "sma", "metric-ifgsm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 20, 40])
    add_runner_args(parser)
    args = parser.parse_args()
    run = CellRunner(args)
    mAP: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    train_seconds: dict[tuple[int, str], list[float]] = defaultdict(list)
    for epochs in args.epochs:
        task = ComponentRef("reid-adversarial", {"epochs": epochs})
        for defense in DEFENSES:
            for seed in range(args.seeds):
                for attack in ATTACKS:
                    result = run("reid", task, ComponentRef(attack), ComponentRef(defense), ("reid-rank",), seed)
                    value = result["metrics"]["reid-rank"]["mAP"]["value"]
                    mAP[(epochs, defense, attack)].append(value)
                    trained = result["stages"].get("reid-model:build", 0)
                    if trained:
                        train_seconds[(epochs, defense)].append(result["wall_seconds"])
                    note = f" (trained, {result['wall_seconds']:.0f} s)" if trained else ""
                    print(f"epochs {epochs} {defense} seed {seed} {attack}: mAP {value:.3f}{note}", flush=True)

    print(f"\nmAP, mean ± std over {args.seeds} seeds (eps 8/255)")
    print(f"{'epochs':>6} {'defense':10} " + " ".join(f"{a:>14}" for a in ATTACKS) + "   train s/model")
    for epochs in args.epochs:
        for defense in DEFENSES:
            secs = train_seconds.get((epochs, defense))
            cached = f"{statistics.mean(secs):.0f}" if secs else "cached"
            print(f"{epochs:>6} {defense:10} " + " ".join(f"{mean_std(mAP[(epochs, defense, a)]):>14}" for a in ATTACKS)
                  + f"   {cached}")
    print("\nmetric-at / none, attacked mAP (target >= 2); clean-mAP cost of metric-at")
    for epochs in args.epochs:
        def mean(defense: str, attack: str) -> float:
            return statistics.mean(mAP[(epochs, defense, attack)])
        ratios = "  ".join(f"{a} {mean('metric-at', a) / mean('none', a):.2f}x" for a in ATTACKS[1:])
        print(f"{epochs:>3} epochs: {ratios}  clean cost {mean('none', 'none') - mean('metric-at', 'none'):+.3f}")


if __name__ == "__main__":
    main()
