"""Plugin authors' kit: the checks every built-in component passes, as a pytest plugin.

Installing benchbench registers this module under pytest's ``pytest11`` entry point, so
a plugin's own test suite gets these fixtures with no conftest:

``benchbench_registry``
    every installed plugin, loaded as ``benchbench grid`` loads them;
``clip_context`` / ``reid_context``
    a ``SmokeTrack``: the track's task at the ``smoke`` preset, a ``RunContext`` on a
    stage cache shared by the whole test session (the smoke data and the clean models
    are built once, whichever test asks first), and ``run``/``check`` for one cell.

and two checks that raise ``AssertionError`` naming the first broken rule:

``check_component(cls)``
    the static contract: names, one-line description, params with help whose identity
    is JSON data under every preset, metric directions;
``check_component_runs(cls)``
    ``check_component`` plus one smoke cell with ``cls`` in its slot, through the same
    ``benchbench.runner.run_cell`` a grid uses: the cell is ok, the result records
    ``cls`` with its version and params, and every declared metric of every evaluator in
    the cell is reported and finite.

    def test_my_defense(clip_context):
        clip_context.check(MyDefense)

This module stays torch-free at import: pytest loads it in every test session of anyone
who installed benchbench, whatever they are testing.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from benchbench.api import Component, Evaluator, Task
from benchbench.config import PRESETS, GridConfig, expand
from benchbench.context import RunContext
from benchbench.errors import ConfigError
from benchbench.registry import Registry, load_registry
from benchbench.runner import Environment, run_cell
from benchbench.stages import StageCache

SMOKE = "smoke"
Ref = str | dict[str, Any]  # a component as a grid config names it: "name" or {name, params}

# The cell a component is checked in when the caller does not choose one: an attacked
# column (so a defense meets poison and ``asr`` has a probe) with evaluators that report
# every metric they declare on it (zero-shot top5 needs > 5 classes: the synthetic
# shapes world has 8).
SMOKE_CELLS: dict[str, dict[str, Any]] = {
    "clip": {"attack": "badnets", "evaluators": ("zero-shot", "linear-probe", "asr")},
    "reid": {"attack": "metric-fgsm", "evaluators": ("reid-rank",)},
}
SLOTS = {"task": "task", "attack": "attack", "defense": "defense", "evaluator": "evaluators"}


def check_component(cls: type[Component]) -> None:
    """Static contract of a component class (no training, no data)."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    for attr in ("kind", "name", "track", "version"):
        value = getattr(cls, attr, None)
        assert isinstance(value, str) and value, f"{where}: '{attr}' must be a non-empty string"
    assert cls.name == cls.name.strip() and " " not in cls.name, f"{where}: name '{cls.name}' has spaces"
    assert cls.description and "\n" not in cls.description, f"{where}: needs a one-line description"
    unknown = set(cls.presets) - set(PRESETS)
    assert not unknown, f"{where}: presets {sorted(unknown)} are not among {PRESETS}"
    for preset in (None, *PRESETS):
        instance = cls(preset=preset)  # defaults and every preset must validate
        identity = instance.identity()
        assert json.loads(json.dumps(identity)) == identity, f"{where}: params must be JSON data"
    for field_name, field in cls.Params.model_fields.items():
        assert field.description, f"{where}: param '{field_name}' needs Field(description=...)"
    if issubclass(cls, Evaluator):
        names = [m.name for m in cls.metrics]
        assert names, f"{where}: an evaluator must declare its metrics"
        assert len(names) == len(set(names)), f"{where}: duplicate metric names {names}"
        for m in cls.metrics:
            assert isinstance(m.higher_is_better, bool), f"{where}: metric {m.name} needs a direction"
    if issubclass(cls, Task):
        task = cls()
        assert isinstance(task.dataset_name(), str) and task.dataset_name(), f"{where}: dataset_name()"
        assert isinstance(task.model_name(), str) and task.model_name(), f"{where}: model_name()"


def run_smoke_cell(track: str, *, attack: Ref | None = None, defense: Ref = "none",
                   evaluators: Sequence[Ref] | None = None, task: Ref | None = None, seed: int = 0,
                   registry: Registry | None = None, extra_plugins: Sequence[str] = (),
                   cache_root: str | Path | None = None) -> dict[str, Any]:
    """Run one cell of ``track`` at the smoke preset through ``benchbench.runner.run_cell``
    and return its result dict; an ``AssertionError`` carries the cell's traceback if it failed.

    Components are named as in a grid config (``"badnets"`` or ``{"name": ..., "params":
    {...}}``); ``attack`` and ``evaluators`` default to ``SMOKE_CELLS[track]`` and
    ``task`` to the track's task. ``registry``: the plugins to use (default: the
    installed ones plus ``extra_plugins``, module names or ``.py`` paths).
    ``cache_root``: a stage cache to share between calls (default: a fresh temporary one).
    """
    if registry is not None and extra_plugins:
        raise TypeError("give either registry or extra_plugins (load_registry(extra_plugins) makes one)")
    registry = registry or load_registry(extra_plugins)
    defaults = SMOKE_CELLS.get(track, {})
    attack = attack if attack is not None else defaults.get("attack")
    evaluators = evaluators if evaluators is not None else defaults.get("evaluators")
    if attack is None or evaluators is None:
        raise TypeError(f"track '{track}' has no default smoke cell; pass attack= and evaluators=")
    config = GridConfig(track=track, task=task, attacks=[attack], defenses=[defense],
                        evaluators=list(evaluators), seeds=[seed])
    try:
        (cell,) = expand(config, registry, preset=SMOKE)
    except ConfigError as exc:
        failures = "".join(f"\n  plugin '{f.plugin}' failed to load: {f.reason}" for f in registry.failures)
        raise AssertionError(f"{exc}{failures}") from None
    with _cache_dir(cache_root) as root:
        result = run_cell(cell.to_dict(), Environment(cache_root=str(root), progress=False), registry)
    assert result["status"] == "ok", f"{cell.label} failed:\n{result['traceback']}"
    return result


def check_component_runs(cls: type[Component], params: dict[str, Any] | None = None, *,
                         registry: Registry | None = None, **cell: Any) -> dict[str, Any]:
    """``check_component(cls)``, then ``cls`` (with ``params``) in one smoke cell of its track.

    ``cell`` takes ``run_smoke_cell``'s keywords for the other slots (e.g. ``attack=
    "blended"``, ``extra_plugins=[...]``, ``cache_root=...``); an evaluator under test is
    the cell's only evaluator, so pick a cell in which it reports every metric it
    declares. Returns the result dict for further checks.
    """
    check_component(cls)
    slot = SLOTS[cls.kind]
    if slot in cell:
        raise TypeError(f"{slot}= is the component under test here ({cls.name}); choose the other slots")
    ref = {"name": cls.name, "params": params or {}}
    cell[slot] = [ref] if slot == "evaluators" else ref
    registry = registry or load_registry(cell.pop("extra_plugins", ()))
    result = run_smoke_cell(cls.track, registry=registry, **cell)

    recorded = result["components"]["evaluators"][0] if slot == "evaluators" else result["components"][slot]
    expected = json.loads(json.dumps(cls(params, preset=SMOKE).identity()))
    got = {k: recorded[k] for k in expected}
    assert got == expected, (f"the cell ran {got}, not {expected}: is an older version of "
                             f"'{cls.name}' installed? (reinstall the plugin)")
    for ev in result["components"]["evaluators"]:
        values = result["metrics"].get(ev["name"], {})
        declared = [m.name for m in registry.get("evaluator", cls.track, ev["name"]).metrics]
        missing = [m for m in declared if m not in values]
        assert not missing, (f"evaluator '{ev['name']}' did not report {missing} in {cls.track} cell "
                             f"{_cell_label(result)}; choose a cell where it reports every declared metric")
        # (a NaN or inf already failed the cell in the runner: NonFiniteMetric)
    return result


def _cell_label(result: dict[str, Any]) -> str:
    c = result["components"]
    return f"(attack={c['attack']['name']}, defense={c['defense']['name']})"


@contextlib.contextmanager
def _cache_dir(root: str | Path | None) -> Iterator[Path]:
    if root is not None:
        yield Path(root)
        return
    with tempfile.TemporaryDirectory(prefix="benchbench-smoke-") as tmp:
        yield Path(tmp)


@dataclass
class SmokeTrack:
    """One track at the smoke preset on a stage cache shared by the test session.

    ``task`` and ``ctx`` (seed 0) are what the track's own ``Task.run`` gets, for tests of
    single hooks (``clip_context.task.base_data(clip_context.ctx)`` is the smoke data
    stage); ``run`` and ``check`` run whole cells on the shared cache (with the cells'
    default one torch thread: smoke models are tiny, extra threads only fight over cores).
    """

    track: str
    registry: Registry
    ctx: RunContext
    task: Task

    @classmethod
    def create(cls, track: str, registry: Registry, cache_root: Path) -> "SmokeTrack":
        tasks = registry.of_kind("task", track)
        assert tasks, f"no task plugin for track '{track}' is installed (see `benchbench plugins`)"
        ctx = RunContext(cache=StageCache(cache_root), seed=0, preset=SMOKE, progress=False)
        return cls(track, registry, ctx, tasks[0](preset=SMOKE))

    def run(self, **cell: Any) -> dict[str, Any]:
        """``run_smoke_cell`` on this track and cache (same keywords)."""
        return run_smoke_cell(self.track, registry=self.registry, cache_root=self.ctx.cache.root, **cell)

    def check(self, cls: type[Component], params: dict[str, Any] | None = None, **cell: Any) -> dict[str, Any]:
        """``check_component_runs`` on this track and cache (same keywords)."""
        assert cls.track == self.track, f"{cls.name} is a {cls.track} component, not {self.track}"
        return check_component_runs(cls, params, registry=self.registry, cache_root=self.ctx.cache.root,
                                    **cell)


# -- pytest fixtures (this module is the ``benchbench`` pytest11 plugin) -------------------
@pytest.fixture(scope="session")
def benchbench_registry() -> Registry:
    """Every installed benchbench plugin (failures in ``.failures``, as `benchbench plugins` shows)."""
    return load_registry()


@pytest.fixture(scope="session")
def benchbench_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One stage cache for the session: smoke data and clean models are built once."""
    return tmp_path_factory.mktemp("benchbench-cache")


@pytest.fixture(scope="session")
def clip_context(benchbench_registry: Registry, benchbench_cache: Path) -> SmokeTrack:
    """The CLIP poisoning track at the smoke preset (seconds per cell on a CPU)."""
    return SmokeTrack.create("clip", benchbench_registry, benchbench_cache)


@pytest.fixture(scope="session")
def reid_context(benchbench_registry: Registry, benchbench_cache: Path) -> SmokeTrack:
    """The ReID adversarial track at the smoke preset (about a second per cell on a CPU)."""
    return SmokeTrack.create("reid", benchbench_registry, benchbench_cache)
