"""The default ReID grid cell by cell through ``benchbench.runner.run_cell``, with its numbers.

Prints one row per cell as it finishes, then mean +- std over seeds of mAP and Rank-1
per defense and attack, each training's wall time, and checks the acceptance targets
(clean Rank-1 of ``none`` >= 0.7; every attack halves ``none``'s mAP; ``metric-at`` keeps
at least twice ``none``'s attacked mAP under ``sma`` and ``metric-ifgsm``).

    .venv/bin/python benchmarks/reid_baseline.py [--preset default] [--seeds 3] [--cache .benchbench/cache]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

from common import mean_std
from rich.console import Console
from rich.table import Table

from benchbench.config import expand, load_config
from benchbench.registry import load_registry
from benchbench.runner import Environment, run_cell

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "reid-default.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seeds", type=int, default=None, help="override the config's seeds")
    parser.add_argument("--cache", default=".benchbench/reid-baseline-cache")
    args = parser.parse_args()

    registry = load_registry()
    cells = expand(load_config(CONFIG), registry, preset=args.preset, seeds=args.seeds)
    env = Environment(cache_root=args.cache, progress=False)
    console = Console()
    scores: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    cell_seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    start = time.perf_counter()
    for cell in cells:
        result = run_cell(cell.to_dict(), env, registry)
        if result["status"] != "ok":
            console.print(f"[red]{cell.label}: {result['error']}")
            continue
        metrics = {k: v["value"] for k, v in result["metrics"]["reid-rank"].items()}
        key = (cell.defense.name, cell.attack.name)
        for name in ("mAP", "rank1"):
            scores[key][name].append(metrics[name])
        trained = result["stages"].get("reid-model:build", 0)
        cell_seconds[(cell.defense.name, "train" if trained else "attack")].append(result["wall_seconds"])
        console.print(f"{cell.label}: mAP {metrics['mAP']:.3f} R1 {metrics['rank1']:.3f} "
                      f"({result['wall_seconds']:.0f}s{', trained' if trained else ''})")
    total = time.perf_counter() - start

    attacks = [a.name for a in dict.fromkeys(c.attack for c in cells)]
    defenses = [d.name for d in dict.fromkeys(c.defense for c in cells)]
    for metric in ("mAP", "rank1"):
        table = Table(title=f"{metric} (mean ± std over seeds), preset {args.preset}")
        table.add_column("defense")
        for a in attacks:
            table.add_column(a, justify="right")
        for d in defenses:
            table.add_row(d, *[mean_std(scores[(d, a)][metric]) if scores[(d, a)][metric] else "-" for a in attacks])
        console.print(table)
    for (d, kind), secs in sorted(cell_seconds.items()):
        console.print(f"{d}: {kind} cells {statistics.mean(secs):.0f}s mean over {len(secs)}")
    console.print(f"grid wall time {total / 60:.1f} min for {len(cells)} cells")

    def mean(d: str, a: str) -> float:
        return statistics.mean(scores[(d, a)]["mAP"])

    checks = {"none clean Rank-1 >= 0.7": statistics.mean(scores[("none", "none")]["rank1"]) >= 0.7}
    for a in attacks[1:]:
        checks[f"{a} halves none's mAP"] = mean("none", a) <= mean("none", "none") / 2
    for a in ("sma", "metric-ifgsm"):
        if ("metric-at", a) in scores:
            checks[f"metric-at >= 2x none's mAP under {a}"] = mean("metric-at", a) >= 2 * mean("none", a)
    for name, ok in checks.items():
        console.print(f"{'[green]PASS' if ok else '[red]FAIL'}[/] {name}")


if __name__ == "__main__":
    main()
