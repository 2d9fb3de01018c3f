"""Grid cells: a serialisable spec (what the config asked for) and its resolved form.

A ``CellSpec`` is plain data, so it can be sent to a worker process or a Ray task and
hashed into the store key; ``resolve`` turns it into component instances through a
registry, in whichever process runs it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from benchbench.numerics import DEFAULT_THREADS
from benchbench.precision import DEFAULT_PRECISION

if TYPE_CHECKING:
    from benchbench.api import Component, DataAttack, Defense, Evaluator, InputAttack, Task
    from benchbench.registry import Registry


def stable_hash(obj: Any, length: int = 16) -> str:
    """Content hash of JSON-able data (sorted keys), used for cell and stage keys."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class ComponentRef:
    """A component by name plus the params the config gave it (before defaults)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CellSpec:
    track: str
    task: ComponentRef
    attack: ComponentRef
    defense: ComponentRef
    evaluators: tuple[ComponentRef, ...]
    seed: int
    preset: str
    threads: int = DEFAULT_THREADS  # torch threads the cell runs with (benchbench.numerics)
    precision: str = DEFAULT_PRECISION  # fp32 | bf16 | fp16 (benchbench.precision)
    # processes training the cell together (torchrun, Ray Train): protocol, as threads are
    # (gradient averaging moves the last digits; augmentations are drawn per slice row)
    processes: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CellSpec":
        return cls(
            track=d["track"],
            task=ComponentRef(**d["task"]),
            attack=ComponentRef(**d["attack"]),
            defense=ComponentRef(**d["defense"]),
            evaluators=tuple(ComponentRef(**e) for e in d["evaluators"]),
            seed=int(d["seed"]),
            preset=d["preset"],
            threads=int(d.get("threads", DEFAULT_THREADS)),
            precision=d.get("precision", DEFAULT_PRECISION),
            processes=int(d.get("processes", 1)),
        )

    @property
    def label(self) -> str:
        return f"{self.track}: defense={self.defense.name} attack={self.attack.name} seed={self.seed}"

    def resolve(self, registry: "Registry") -> "ResolvedCell":
        def make(kind: str, ref: ComponentRef):
            cls = registry.get(kind, self.track, ref.name)
            return cls(ref.params, preset=self.preset)

        return ResolvedCell(
            spec=self,
            task=make("task", self.task),
            attack=make("attack", self.attack),
            defense=make("defense", self.defense),
            evaluators=tuple(make("evaluator", e) for e in self.evaluators),
        )


@dataclass(frozen=True)
class ResolvedCell:
    spec: CellSpec
    task: "Task"
    attack: "DataAttack | InputAttack"
    defense: "Defense"
    evaluators: tuple["Evaluator", ...]

    @property
    def seed(self) -> int:
        return self.spec.seed

    def components(self) -> list["Component"]:
        return [self.task, self.attack, self.defense, *self.evaluators]

    def key(self) -> str:
        """Identity of the cell's result: every component's name, version and resolved
        params, plus seed, torch thread count, precision (only when not fp32) and processes
        (only when more than one), so the keys from before those existed stay the same.
        Same key = same experiment (same numbers), so the store can skip it."""
        ident = {"components": [c.identity() for c in self.components()], "seed": self.spec.seed,
                 "threads": self.spec.threads}
        if self.spec.precision != DEFAULT_PRECISION:
            ident["precision"] = self.spec.precision
        if self.spec.processes > 1:
            ident["processes"] = self.spec.processes
        return stable_hash(ident)
