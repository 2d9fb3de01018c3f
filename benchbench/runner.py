"""Run one cell, in whatever process an executor chose.

``run_cell`` takes and returns plain data (a ``CellSpec`` dict in, a result dict out) so
the local process pool and Ray can ship it without pickling component objects. Any
exception inside the cell becomes a ``failed`` result with its traceback: one broken
plugin never takes the grid down. The exception is a ``CacheError`` (a corrupt stage, a
full disk): it would fail every later cell too, so it stops the grid with its one line.
"""
from __future__ import annotations

import functools
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchbench import distributed
from benchbench.cells import CellSpec
from benchbench.context import RunContext
from benchbench.errors import ConfigError, check_finite
from benchbench.numerics import cell_numerics
from benchbench.precision import DEFAULT_PRECISION
from benchbench.registry import Registry, load_registry
from benchbench.stages import CacheError, StageCache

if TYPE_CHECKING:
    from benchbench.checkpoint import Every


@dataclass(frozen=True)
class Environment:
    """What a worker needs to rebuild the registry and find the stage cache."""

    cache_root: str
    plugins: tuple[str, ...] = ()
    device: str = "cpu"  # a resource, not protocol: in no key (docs/architecture.md)
    progress: bool = True
    checkpoint_every: "Every" = None  # the config's: every N steps, "epoch", or None
    keep_checkpoints: bool = False
    resources: dict[str, float] = field(default_factory=dict)  # per cell, e.g. {"num_gpus": 1} (Ray)


@functools.lru_cache(maxsize=4)
def _registry(plugins: tuple[str, ...]) -> Registry:
    return load_registry(plugins)


def run_cell(spec: dict[str, Any], env: Environment, registry: Registry | None = None) -> dict[str, Any]:
    """Run one cell; return ``{"status", "metrics", "error", "traceback", "wall_seconds",
    "components", "stages"}``. Never raises for errors inside the cell."""
    start = time.perf_counter()
    cell = CellSpec.from_dict(spec)
    cache = StageCache(env.cache_root, threads=cell.threads, precision=cell.precision,
                       keep_checkpoints=env.keep_checkpoints, processes=cell.processes)
    result: dict[str, Any] = {"status": "failed", "metrics": {}, "error": None, "traceback": None,
                              "components": {}, "stages": {}}
    try:
        reg = registry or _registry(tuple(env.plugins))
        resolved = cell.resolve(reg)
        result["components"] = {
            role: {**c.identity(), "plugin": c.plugin.name, "distribution": c.plugin.distribution,
                   "plugin_version": c.plugin.version}
            for role, c in [("task", resolved.task), ("attack", resolved.attack),
                            ("defense", resolved.defense)]
        }
        result["components"]["task"]["threads"] = cell.threads  # part of the protocol (leaderboard)
        if cell.precision != DEFAULT_PRECISION:  # so is precision; fp32 rows keep their old protocol
            result["components"]["task"]["precision"] = cell.precision
        if cell.processes != distributed.world_size():
            raise ConfigError(f"the cell is for {cell.processes} process(es) but runs on "
                              f"{distributed.world_size()}; launch it as its grid was planned")
        if cell.processes > 1:  # and so are processes; one-process rows keep their old protocol
            result["components"]["task"]["processes"] = cell.processes
        result["components"]["evaluators"] = [
            {**e.identity(), "plugin": e.plugin.name, "distribution": e.plugin.distribution,
             "plugin_version": e.plugin.version, "metric_roles": {m.name: m.role for m in e.metrics},
             "metric_definitions": {m.name: m.definition() for m in e.metrics}}
            for e in resolved.evaluators
        ]
        result["components"]["defense"]["trained_against"] = list(resolved.defense.trained_against())
        if resolved.attack.adaptive_to:  # the board gives adaptive attacks their own section
            result["components"]["attack"].update(adaptive_to=resolved.attack.adaptive_to,
                                                  extends=resolved.attack.extends)
        if resolved.defense.attacker_gradient() is not None:  # a purifier: the board says how it was attacked
            result["components"]["defense"]["attacker_gradient"] = resolved.defense.attacker_gradient()
        result["dataset"] = resolved.task.dataset_name()
        result["model"] = resolved.task.model_name()
        ctx = RunContext(cache=cache, seed=cell.seed, preset=cell.preset, device=env.device,
                         progress=env.progress, precision=cell.precision, checkpoint_every=env.checkpoint_every)
        with cell_numerics(cell.threads, cell.seed):  # the same numbers in any process
            metrics = resolved.task.run(resolved, ctx)
        result["metrics"] = _check_metrics(resolved, metrics)
        result["status"] = "ok"
    except CacheError:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded, the grid goes on
        result["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        result["traceback"] = traceback.format_exc()
    result["stages"] = {f"{n}:{w}": c for (n, w), c in cache.stats.items()}
    result["wall_seconds"] = round(time.perf_counter() - start, 3)
    return result


def _check_metrics(cell, metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Attach each metric's declared definition; reject undeclared metrics and NaN or inf
    values (plugin bugs that would otherwise reach the store or the leaderboard)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    by_name = {e.name: e for e in cell.evaluators}
    for ev_name, values in metrics.items():
        ev = by_name.get(ev_name)
        if ev is None:
            raise RuntimeError(f"task returned metrics for evaluator '{ev_name}' not in the cell")
        out[ev_name] = {}
        for metric, value in values.items():
            m = ev.metric(metric)
            value = check_finite(ev_name, metric, float(value))
            if not m.contains(value):
                raise RuntimeError(f"evaluator '{ev_name}' reported {metric} = {value}, outside its declared "
                                   f"range [{m.low}, {m.high}] (a plugin bug)")
            out[ev_name][metric] = {"value": value, "higher_is_better": m.higher_is_better,
                                    "formula_version": m.formula_version}
    return out
