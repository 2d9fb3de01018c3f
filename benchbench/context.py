"""What a Task gets besides the cell: where to cache stages, which device, which seed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchbench.stages import StageCache


@dataclass
class RunContext:
    cache: "StageCache"
    seed: int
    preset: str = "default"
    device: str = "cpu"
    progress: bool = True
    # Free-form notes a task wants in the cell's provenance (e.g. which stages were hits).
    notes: dict = field(default_factory=dict)
