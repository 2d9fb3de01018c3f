"""Grid configs: YAML -> validated list of cells.

Every name and every param is checked against the registry before the first cell runs,
so a typo costs a second, not an hour of training: an unknown name is a one-line error
with did-you-mean suggestions, a bad param names the component and its valid params.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from benchbench.cells import CellSpec, ComponentRef, stable_hash
from benchbench.errors import ConfigError
from benchbench.numerics import DEFAULT_THREADS
from benchbench.registry import Registry

PRESETS = ("smoke", "default", "paper")
RefLike = Union[str, dict[str, Any]]


class Resources(BaseModel):
    """What one cell reserves on a Ray cluster (ignored by the local executor)."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(1, ge=0)
    num_gpus: float = Field(0, ge=0)


class GridConfig(BaseModel):
    """The file format (see configs/*.yaml)."""

    model_config = ConfigDict(extra="forbid")

    track: str
    task: RefLike | None = None  # default: the track's only task
    attacks: list[RefLike]
    defenses: list[RefLike]
    evaluators: list[RefLike]
    seeds: int | list[int] = 1
    resources: Resources = Resources()
    # torch threads per cell: part of the protocol (float sums depend on it), so it is in
    # every cell and stage key; --jobs only chooses how many cells run at once
    threads: int = Field(DEFAULT_THREADS, ge=1)

    @field_validator("attacks", "defenses", "evaluators")
    @classmethod
    def _non_empty(cls, v: list) -> list:
        if not v:
            raise ValueError("must list at least one component")
        return v

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


def _ref(item: RefLike, where: str) -> ComponentRef:
    if isinstance(item, str):
        return ComponentRef(item)
    if isinstance(item, dict) and set(item) <= {"name", "params"} and isinstance(item.get("name"), str):
        return ComponentRef(item["name"], dict(item.get("params") or {}))
    raise ConfigError(f"{where}: expected a name or {{name: ..., params: {{...}}}}, got {item!r}")


def load_config(path: str | Path) -> GridConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (see configs/ for examples)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with track, attacks, defenses, evaluators")
    try:
        return GridConfig(**raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def expand(config: GridConfig, registry: Registry, preset: str = "default",
           seeds: int | None = None) -> list[CellSpec]:
    """Cells = attacks x defenses x seeds, each validated by resolving it once.

    Cells are ordered attack-major (then defense, then seed): the clean column comes
    first, so a ReID grid trains each (defense, seed) model in its first cells and the
    attack columns after it reuse them, and ``--jobs N`` workers start on N different
    models instead of waiting on one another's stage lock.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    if config.track not in registry.tracks():
        raise ConfigError(f"unknown track '{config.track}'; known tracks: "
                          f"{', '.join(registry.tracks()) or 'none (no task plugin loaded)'}")
    if config.task is None:
        tasks = registry.of_kind("task", config.track)
        task = ComponentRef(tasks[0].name)
    else:
        task = _ref(config.task, "task")
    attacks = [_ref(a, "attacks") for a in config.attacks]
    defenses = [_ref(d, "defenses") for d in config.defenses]
    evaluators = tuple(_ref(e, "evaluators") for e in config.evaluators)
    seed_list = list(range(seeds)) if seeds is not None else config.seed_list()
    cells = [
        CellSpec(config.track, task, attack, defense, evaluators, seed, preset, config.threads)
        for attack, defense, seed in itertools.product(attacks, defenses, seed_list)
    ]
    for cell in cells:  # resolution validates names and params; raises ConfigError
        cell.resolve(registry)
    return cells


def config_hash(config: GridConfig) -> str:
    return stable_hash(config.model_dump())
