"""The grid driver: config -> cells -> executor -> store, resumable and failure-isolated.

Nothing a cell or a plugin does stops the grid: a cell's exception, a NaN metric or a dead
worker becomes a ``failed`` cell, and an observer hook that raises is reported at the
end. What would fail every cell the same way is caught before the first one runs: the
config (``benchbench.config``) and the data each task would read (``Task.check_data``).
Cells are claimed in the store before they run, so a second grid on the same store skips
what the first is running instead of evaluating it again.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from benchbench.cells import CellSpec, stable_hash
from benchbench.config import config_hash, expand, load_config
from benchbench.errors import ConfigError, NonFiniteMetric
from benchbench.executors import Executor
from benchbench.executors.local import LocalExecutor
from benchbench.progress import grid_display, on_terminal
from benchbench.registry import Registry, distribution_versions, load_registry
from benchbench.runner import Environment
from benchbench.stages import in_use
from benchbench.store import Store


@dataclass
class GridSummary:
    total: int = 0
    cached: int = 0
    ok: int = 0
    failed: list[str] = field(default_factory=list)  # "label: error"
    wall_seconds: float = 0.0  # from loading the config to the last stored result
    busy: dict[str, str] = field(default_factory=dict)  # key -> owner: another live grid runs it
    hook_errors: list[str] = field(default_factory=list)  # one line per observer that raised

    @property
    def success(self) -> bool:
        return not self.failed


def run_grid(config_path: str | Path, store_path: str | Path, cache_root: str | Path,
             preset: str = "default", seeds: int | None = None, executor: Executor | None = None,
             plugins: tuple[str, ...] = (), registry: Registry | None = None,
             progress: bool = True, argv: list[str] | None = None, device: str = "cpu",
             only: Collection[str] | None = None, processes: int = 1) -> GridSummary:
    """Run the cells of ``config_path`` (``only``: just the cells with these keys) that the
    store does not hold yet, committing each result as it comes back. ``processes``: how
    many processes train each cell together (the executor's, e.g. torchrun's world size)."""
    start = time.perf_counter()
    registry = registry or load_registry(plugins)
    config, keyed = _expand(config_path, registry, preset, seeds, processes)
    if only is not None:
        keyed = [(key, cell) for key, cell in keyed if key in only]
    summary = GridSummary(total=len(keyed))
    bars = progress and on_terminal()  # else one line per finished cell (benchbench.progress)
    env = Environment(cache_root=str(cache_root), plugins=tuple(plugins), device=device, progress=bars,
                      resources=config.resources.model_dump(), checkpoint_every=config.checkpoint_every,
                      keep_checkpoints=config.keep_checkpoints)
    executor = executor or LocalExecutor()
    by_key = dict(keyed)
    observers = _Observers(registry)
    with in_use(cache_root), Store(store_path) as store:  # `benchbench cache prune` waits for us
        done = store.finished_keys()
        check_data([cell for key, cell in keyed if key not in done], registry)
        for key, cell in keyed:
            if key in done:
                observers.notify(cell=cell, key=key, status="cached", metrics={}, error=None)
        claimed, summary.busy = store.claim([k for k, _c in keyed if k not in done])
        summary.cached = len(keyed) - len(claimed) - len(summary.busy)
        try:
            if claimed:
                _run(store, executor, [(k, by_key[k].to_dict()) for k in claimed], env, registry,
                     by_key, observers, summary, bars,
                     run_id=store.start_run(str(config_path), config_hash(config), config.model_dump(),
                                            preset, distribution_versions(), argv))
        finally:  # interrupted or not, a cell this grid did not finish is free for the next one
            store.release_claims()
    summary.hook_errors = observers.problems()
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _expand(config_path: str | Path, registry: Registry, preset: str,
            seeds: int | None, processes: int = 1) -> tuple[Any, list[tuple[str, CellSpec]]]:
    """The config and its cells, each with its store key (``processes``: how many train
    each cell together, part of its key when more than one)."""
    config = load_config(config_path)
    cells = [dataclasses.replace(cell, processes=processes)
             for cell in expand(config, registry, preset=preset, seeds=seeds)]
    return config, [(cell.resolve(registry).key(), cell) for cell in cells]


def select_cell(config_path: str | Path, selector: str, registry: Registry, preset: str = "default",
                seeds: int | None = None, processes: int = 1) -> str:
    """The key of one cell of the config, for ``processes`` processes: ``selector`` is its
    0-based position or its key as ``grid --dry-run`` lists them (one process), or a
    unique start of that key."""
    _config, keyed = _expand(config_path, registry, preset, seeds)
    keys = [key for key, _cell in keyed]
    position = int(selector) if selector.isdigit() and int(selector) < len(keys) else None
    matches = [i for i, key in enumerate(keys) if key.startswith(selector)]
    if position is None and len(matches) == 1:
        position = matches[0]
    if position is not None:
        cell = dataclasses.replace(keyed[position][1], processes=processes)
        return cell.resolve(registry).key()
    how = "matches several cells" if matches else "is no cell's key or position"
    raise ConfigError(f"'{selector}' {how} in {config_path} ({len(keys)} cells); pick one from "
                      f"`benchbench grid {config_path} --dry-run` (a key, or its position from 0)")


def plan(config_path: str | Path, store_path: str | Path, preset: str = "default",
         seeds: int | None = None, registry: Registry | None = None) -> list[tuple[str, str, CellSpec]]:
    """What ``run_grid`` would do, without running or writing anything: ``(what, key,
    cell)`` per cell, ``what`` being "stored" (skipped), "failed" (stored as failed: runs
    again), "running" (another live grid holds it: skipped) or "new"."""
    registry = registry or load_registry()
    _config, keyed = _expand(config_path, registry, preset, seeds)
    stored: dict[str, str] = {}
    running: dict[str, str] = {}
    if Path(store_path).is_file():
        with Store.read_only(store_path) as store:
            stored, running = store.statuses(), store.claim_owners()
    return [("stored" if stored.get(k) == "ok" else "running" if k in running
             else "failed" if k in stored else "new", k, cell) for k, cell in keyed]


def check_data(cells: list[CellSpec], registry: Registry) -> None:
    """Each distinct task of ``cells`` checks its data once (``Task.check_data``), before
    any cell is claimed or run: a missing folder or a wrong layout raises its one-line
    ``DataError`` here and the store gains no failed row."""
    tasks = {}
    for cell in cells:
        task = registry.get("task", cell.track, cell.task.name)(cell.task.params, preset=cell.preset)
        tasks.setdefault(stable_hash(task.identity()), task)
    for task in tasks.values():
        task.check_data()


def _run(store: Store, executor: Executor, todo: list[tuple[str, dict[str, Any]]], env: Environment,
         registry: Registry, by_key: dict, observers: "_Observers", summary: GridSummary,
         bars: bool, run_id: int) -> None:
    """Run the claimed cells, committing each result the moment it comes back."""
    with grid_display(len(todo), bars) as cell_done:
        results = executor.map(todo, env, registry)
        try:
            for key, result in results:
                cell = by_key[key]
                result = _record(store, run_id, key, cell, result)
                _report(observers, summary, cell, key, result)
                cell_done(cell.label, result["status"], result.get("wall_seconds"))
        finally:  # interrupted: the executor stops its workers now, not at garbage collection
            getattr(results, "close", lambda: None)()


def _record(store: Store, run_id: int, key: str, cell, result: dict[str, Any]) -> dict[str, Any]:
    """Commit one result. A NaN or inf metric that got past the runner (a custom executor,
    an older worker) fails this cell instead of the grid."""
    try:
        store.record(run_id, key, cell, result)
    except NonFiniteMetric as exc:
        result = {**result, "status": "failed", "metrics": {}, "error": f"NonFiniteMetric: {exc}",
                  "traceback": None}
        store.record(run_id, key, cell, result)
    return result


def _report(observers: "_Observers", summary: GridSummary, cell, key: str, result: dict[str, Any]) -> None:
    metrics = {ev: {m: v["value"] for m, v in vals.items()} for ev, vals in result["metrics"].items()}
    observers.notify(cell=cell, key=key, status=result["status"], metrics=metrics, error=result["error"])
    if result["status"] == "ok":
        summary.ok += 1
    else:
        summary.failed.append(f"{cell.label}: {result['error']}")


class _Observers:
    """``benchbench_cell_finished``, called in each plugin on its own: an observer that
    raises is reported once at the end, and neither the other observers nor the grid
    stop (cached cells notify first, so a raising observer would otherwise stop every
    re-run before it ran anything)."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.first: dict[str, str] = {}
        self.count: Counter[str] = Counter()

    def notify(self, **kwargs: Any) -> None:
        for plugin, exc in self.registry.call_each("benchbench_cell_finished", **kwargs):
            self.first.setdefault(plugin, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            self.count[plugin] += 1

    def problems(self) -> list[str]:
        return [f"plugin '{p}': benchbench_cell_finished raised for {self.count[p]} cell(s), "
                f"first {e}; results are stored, the grid went on" for p, e in self.first.items()]
