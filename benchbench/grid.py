"""The grid driver: config -> cells -> executor -> store, resumable and failure-isolated."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchbench.config import config_hash, expand, load_config
from benchbench.executors import Executor
from benchbench.executors.local import LocalExecutor
from benchbench.progress import active, make_progress
from benchbench.registry import Registry, distribution_versions, load_registry
from benchbench.runner import Environment
from benchbench.store import Store


@dataclass
class GridSummary:
    total: int = 0
    cached: int = 0
    ok: int = 0
    failed: list[str] = field(default_factory=list)  # "label: error"
    wall_seconds: float = 0.0  # from loading the config to the last stored result

    @property
    def success(self) -> bool:
        return not self.failed


def run_grid(config_path: str | Path, store_path: str | Path, cache_root: str | Path,
             preset: str = "default", seeds: int | None = None, executor: Executor | None = None,
             plugins: tuple[str, ...] = (), registry: Registry | None = None,
             progress: bool = True, argv: list[str] | None = None) -> GridSummary:
    start = time.perf_counter()
    registry = registry or load_registry(plugins)
    config = load_config(config_path)
    cells = expand(config, registry, preset=preset, seeds=seeds)
    keyed = [(cell.resolve(registry).key(), cell) for cell in cells]
    summary = GridSummary(total=len(keyed))
    env = Environment(cache_root=str(cache_root), plugins=tuple(plugins), progress=progress,
                      resources=config.resources.model_dump())
    executor = executor or LocalExecutor()
    by_key = dict(keyed)
    with Store(store_path) as store:
        done = store.finished_keys()
        todo = [(k, c.to_dict()) for k, c in keyed if k not in done]
        summary.cached = len(keyed) - len(todo)
        for key, cell in keyed:
            if key in done:
                registry.pm.hook.benchbench_cell_finished(cell=cell, key=key, status="cached",
                                                          metrics={}, error=None)
        if not todo:
            summary.wall_seconds = time.perf_counter() - start
            return summary
        run_id = store.start_run(str(config_path), config_hash(config), config.model_dump(), preset,
                                 distribution_versions(), argv)
        with active(make_progress(disable=not progress)) as bar:
            task = bar.add_task("grid", total=len(todo))
            for key, result in executor.map(todo, env, registry):
                cell = by_key[key]
                store.record(run_id, key, cell, result)
                _report(registry, summary, cell, key, result)
                bar.update(task, advance=1, description=f"grid (last: {cell.label}: {result['status']})")
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _report(registry: Registry, summary: GridSummary, cell, key: str, result: dict[str, Any]) -> None:
    metrics = {ev: {m: v["value"] for m, v in vals.items()} for ev, vals in result["metrics"].items()}
    registry.pm.hook.benchbench_cell_finished(cell=cell, key=key, status=result["status"],
                                              metrics=metrics, error=result["error"])
    if result["status"] == "ok":
        summary.ok += 1
    else:
        summary.failed.append(f"{cell.label}: {result['error']}")
