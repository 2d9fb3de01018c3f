"""Measure the undefended CLIP baseline against the track's acceptance targets.

Runs defense ``none`` under every built-in attack for a few seeds through
``benchbench.runner.run_cell`` (the path the grid uses) and prints mean +- std per
metric, the wall time per cell, and whether each target holds:

- zero-shot top-1 on the clean model >= 3x chance;
- badnets and blended ASR >= 0.8, targeted-poison ASR >= 0.6;
- asr_clean (the same probes on the clean model) <= 0.1.

    .venv/bin/python benchmarks/clip_baseline.py --seeds 3 --threads 2

Clean cells run first, so attacked cells find the clean reference model in the cache.
Timings depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import statistics
import time

from common import mean_std

from benchbench.cells import CellSpec, ComponentRef
from benchbench.registry import load_registry
from benchbench.runner import Environment, run_cell

ATTACKS = ("none", "badnets", "blended", "targeted-poison")
EVALUATORS = ("zero-shot", "linear-probe", "asr")
ASR_TARGET = {"badnets": 0.8, "blended": 0.8, "targeted-poison": 0.6}


def cell(attack: str, seed: int, preset: str, threads: int) -> dict:
    return CellSpec(track="clip", task=ComponentRef("clip-poisoning"), attack=ComponentRef(attack),
                    defense=ComponentRef("none"), evaluators=tuple(ComponentRef(e) for e in EVALUATORS),
                    seed=seed, preset=preset, threads=threads).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--cache", default=".benchbench-cache/clip-baseline")
    args = parser.parse_args()
    registry = load_registry()
    env = Environment(cache_root=args.cache, progress=False)
    results: dict[str, dict[str, list[float]]] = {a: {} for a in ATTACKS}
    n_classes = None
    for seed in range(args.seeds):
        for attack in ATTACKS:
            start = time.perf_counter()
            result = run_cell(cell(attack, seed, args.preset, args.threads), env, registry)
            if result["status"] != "ok":
                raise SystemExit(f"{attack} seed {seed} failed:\n{result['traceback']}")
            results[attack].setdefault("seconds", []).append(time.perf_counter() - start)
            for evaluator, metrics in result["metrics"].items():
                for metric, value in metrics.items():
                    results[attack].setdefault(f"{evaluator}/{metric}", []).append(value["value"])
            built = result["stages"].get("clip-model:build", 0)
            print(f"seed {seed} {attack:16s} {time.perf_counter() - start:6.1f} s "
                  f"({built} model(s) trained)", flush=True)
    if n_classes is None:
        from benchbench.clip.synthetic import SHAPES
        n_classes = len(SHAPES)
    print(f"\npreset {args.preset}, defense none, {args.seeds} seeds, {args.threads} threads")
    for attack, metrics in results.items():
        print(f"{attack}:")
        for name, values in sorted(metrics.items()):
            print(f"  {name:22s} {mean_std(values)}")
    mean = {a: {k: statistics.fmean(v) for k, v in m.items()} for a, m in results.items()}
    chance = 1 / n_classes
    checks = [(f"zero-shot top-1 >= 3x chance ({3 * chance:.3f})", mean["none"]["zero-shot/top1"] >= 3 * chance)]
    for attack, target in ASR_TARGET.items():
        checks.append((f"{attack} ASR >= {target}", mean[attack]["asr/asr"] >= target))
        checks.append((f"{attack} asr_clean <= 0.1", mean[attack]["asr/asr_clean"] <= 0.1))
    print()
    for what, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")


if __name__ == "__main__":
    main()
