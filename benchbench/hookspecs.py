"""The whole plugin contract: every hook benchbench calls, documented in one place.

A plugin is a module (or object) with functions marked ``@benchbench.hookimpl`` whose
names match the specs below. It is found through the ``benchbench`` entry-point group
(``[project.entry-points.benchbench] mydef = "mydef"``) or ``--plugin module_or_path``.
Built-in plugins load through exactly the same path.

Component hooks return component *classes*; the registry tags each class with the
plugin that returned it (name, distribution, version) so every result row can say
where its attack, defense and evaluator came from.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from benchbench.api import DataAttack, Defense, Evaluator, InputAttack, Task
    from benchbench.cells import CellSpec

PROJECT = "benchbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def benchbench_tasks() -> list[type["Task"]]:
    """Return Task classes: one per track (e.g. ``clip``, ``reid``). A Task runs one
    grid cell: data -> attack -> defense -> evaluators."""


@hookspec
def benchbench_attacks() -> list[type["DataAttack"] | type["InputAttack"]]:
    """Return attack classes. A ``DataAttack`` poisons the training set (CLIP track);
    an ``InputAttack`` perturbs test inputs given the model (ReID track). Each track
    also has an attack named ``none``: the clean reference column."""


@hookspec
def benchbench_defenses() -> list[type["Defense"]]:
    """Return defense classes. A defense trains its track's model; the track's trainer
    calls the defense's hooks (re-match pairs, extra losses, post-training fine-tune)."""


@hookspec
def benchbench_evaluators() -> list[type["Evaluator"]]:
    """Return evaluator classes. Each declares its metrics (name, direction, formula
    version) and returns ``{metric: value}`` for a cell."""


@hookspec
def benchbench_cell_finished(cell: "CellSpec", key: str, status: str, metrics: dict[str, Any],
                             error: str | None) -> None:
    """Observer: called in the driver after a cell's result is committed to the store.
    ``status`` is ``ok``, ``cached`` or ``failed``; ``metrics`` is
    ``{evaluator: {metric: value}}``. Each plugin's observer is called on its own: one
    that raises is reported once at the end of the grid and stops neither the others
    nor the grid."""


@hookspec
def benchbench_leaderboard_writers() -> dict[str, Any]:
    """Return ``{format name: writer}`` where ``writer(board, out_dir) -> list[Path]``
    writes one track's leaderboard in that format (``board`` is a
    ``benchbench.leaderboard.Board``). Built-in formats: md, csv, json, plots, html."""
