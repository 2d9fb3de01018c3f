"""What the benchmark scripts share: running single cells outside a grid, through the
grid's own path (``benchbench.runner.run_cell``, so the stage cache and every plugin
behave as in ``benchbench grid``), and printing mean ± std over seeds.
"""
from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any

from benchbench.cells import CellSpec, ComponentRef
from benchbench.registry import load_registry
from benchbench.runner import Environment, run_cell


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` (sample std; 0 for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


def add_runner_args(parser: argparse.ArgumentParser, cache: str = "runs/cache", threads: int = 1) -> None:
    parser.add_argument("--threads", type=int, default=threads, help="torch CPU threads")
    parser.add_argument("--cache", default=cache, help="stage cache (runs/cache shares the default grid's stages)")


class CellRunner:
    """Runs one cell at a time; a failed cell stops the script with its traceback.
    ``plugins``: extra plugin modules or .py files, as ``benchbench grid --plugin``."""

    def __init__(self, args: argparse.Namespace, plugins: Sequence[str] = ()):
        self.threads = args.threads  # each cell's torch threads (part of its key, set by run_cell)
        self.registry = load_registry(plugins)
        self.env = Environment(cache_root=args.cache, plugins=tuple(plugins), progress=False)

    def __call__(self, track: str, task: ComponentRef, attack: ComponentRef, defense: ComponentRef,
                 evaluators: Sequence[str], seed: int, preset: str = "default") -> dict[str, Any]:
        spec = CellSpec(track, task, attack, defense, tuple(ComponentRef(e) for e in evaluators), seed, preset,
                        self.threads)
        result = run_cell(spec.to_dict(), self.env, self.registry)
        if result["status"] != "ok":
            raise SystemExit(f"{spec.label} failed:\n{result['traceback']}")
        return result
