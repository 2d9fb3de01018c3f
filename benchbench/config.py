"""Grid configs: YAML -> validated list of cells.

Every name and every param is checked against the registry before the first cell runs,
so a typo costs a second, not an hour of training: an unknown name is a one-line error
with did-you-mean suggestions, a bad param names the component and its valid params.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from benchbench.cells import CellSpec, ComponentRef, stable_hash
from benchbench.errors import ConfigError
from benchbench.numerics import DEFAULT_THREADS
from benchbench.precision import DEFAULT_PRECISION, PrecisionName
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
    # training (and the ReID attacks') arithmetic: protocol too, in the keys unless fp32
    precision: PrecisionName = DEFAULT_PRECISION
    # trainers checkpoint every N optimiser steps, after each "epoch", or never (null); a
    # re-run of a killed grid resumes each unfinished model from its last checkpoint.
    # Not protocol: it changes no number, so it is in no key.
    checkpoint_every: Union[StrictInt, Literal["epoch"], None] = None
    keep_checkpoints: bool = False  # keep a finished model's checkpoints (default: deleted)

    @field_validator("checkpoint_every")
    @classmethod
    def _positive_interval(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"give a step count >= 1, 'epoch' or null (no checkpoints), got {v}")
        return v

    @field_validator("attacks", "defenses", "evaluators")
    @classmethod
    def _non_empty(cls, v: list) -> list:
        if not v:
            raise ValueError("must list at least one component")
        return v

    @field_validator("seeds")
    @classmethod
    def _valid_seeds(cls, v: int | list[int]) -> int | list[int]:
        """A grid of 0 cells would "succeed" having run nothing, and a repeated seed would
        run (and count) one cell twice: both are typos, caught before the first cell."""
        if isinstance(v, int):
            check_seed_count(v, "give a count N >= 1 (seeds 0..N-1) or a list like [0, 1, 2]")
            return v
        if not v:
            raise ValueError("the seed list is empty; give at least one seed, e.g. [0]")
        if any(s < 0 for s in v):
            raise ValueError(f"seeds must be >= 0, got {v}")
        repeated = sorted({s for s in v if v.count(s) > 1})
        if repeated:
            raise ValueError(f"seed {', '.join(map(str, repeated))} is listed more than once; list each seed once")
        return v

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


def check_seed_count(n: int, fix: str) -> None:
    """Reject a seed count that would give no cells (config ``seeds: N`` and ``--seeds N``)."""
    if n < 1:
        raise ValueError(f"seeds must be at least 1, got {n} (a grid of 0 cells runs nothing); {fix}")


def _ref(item: RefLike, where: str) -> ComponentRef:
    if isinstance(item, str):
        return ComponentRef(item)
    if isinstance(item, dict) and set(item) <= {"name", "params"} and isinstance(item.get("name"), str):
        params = item.get("params")
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"{where}: {item['name']}: params must be a mapping like "
                              f"{{params: {{name: value}}}}, got {params!r}")
        return ComponentRef(item["name"], dict(params or {}))
    raise ConfigError(f"{where}: expected a name or {{name: ..., params: {{...}}}}, got {item!r}")


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """``line L, column C: problem`` (1-based, as editors count) so the user can jump to it."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids: only an offset
        before = text[:exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        return f"line {line}, column {column}: unacceptable character #x{exc.character:04x} ({exc.reason})"
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return problem
    context = getattr(exc, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")


def load_config(path: str | Path) -> GridConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (see configs/ for examples)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                          f"{exc.start}); save the file as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML at {_yaml_problem(exc, text)}") from None
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
    if seeds is not None:
        try:
            check_seed_count(seeds, "pass --seeds N with N >= 1")
        except ValueError as exc:
            raise ConfigError(f"--seeds: {exc}") from None
    seed_list = list(range(seeds)) if seeds is not None else config.seed_list()
    cells = [
        CellSpec(config.track, task, attack, defense, evaluators, seed, preset, config.threads, config.precision)
        for attack, defense, seed in itertools.product(attacks, defenses, seed_list)
    ]
    for cell in cells:  # resolution validates names and params; raises ConfigError
        cell.resolve(registry)
    return cells


def config_hash(config: GridConfig) -> str:
    return stable_hash(config.model_dump())
