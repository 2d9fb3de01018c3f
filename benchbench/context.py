"""What a Task gets besides the cell: where to cache stages, which device, which seed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchbench.checkpoint import Every
    from benchbench.stages import StageCache


@dataclass
class RunContext:
    cache: "StageCache"
    seed: int
    preset: str = "default"
    device: str = "cpu"
    progress: bool = True
    precision: str = "fp32"  # fp32 | bf16 | fp16 (benchbench.precision): protocol, in the keys unless fp32
    checkpoint_every: "Every" = None  # trainers checkpoint every N steps, each "epoch", or never (None)
    # Free-form notes a task wants in the cell's provenance (e.g. which stages were hits).
    notes: dict = field(default_factory=dict)
