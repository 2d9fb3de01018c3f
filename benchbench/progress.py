"""Progress bars that nest: the grid's bar over cells and a trainer's bar over epochs.

rich allows one live display at a time, so a trainer that opened its own ``Progress``
inside the grid's would raise. Trainers call ``progress(iterable, ...)``: inside a grid
it adds a transient row to the grid's display, outside it opens its own.

Bars are for terminals. With stdout a file or a pipe (a cluster job's log, ``| tee``)
or with ``--no-progress``, the grid writes one line per finished cell instead
(``cell_lines``) and trainers draw nothing: rich would print each bar's last frame.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

T = TypeVar("T")
_active: Progress | None = None


def on_terminal() -> bool:
    """Whether stdout is a terminal (rich's test: honours ``FORCE_COLOR``/``TTY_COMPATIBLE``)."""
    return Console().is_terminal


def make_progress(disable: bool = False) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=disable)


@contextmanager
def active(bar: Progress) -> Iterator[Progress]:
    """Make ``bar`` the display that nested ``progress`` calls attach to."""
    global _active
    previous, _active = _active, bar
    try:
        with bar:
            yield bar
    finally:
        _active = previous


def progress(items: Iterable[T], description: str, total: int | None = None,
             enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a bar (no-op when ``enabled`` is False)."""
    if not enabled:
        yield from items
        return
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    if _active is not None:
        task = _active.add_task(description, total=total)
        try:
            for item in items:
                yield item
                _active.advance(task)
        finally:
            _active.remove_task(task)
        return
    if not on_terminal():
        yield from items
        return
    with active(make_progress()) as bar:
        yield from progress(items, description, total)


CellDone = Callable[[str, str, Any], None]  # (cell label, status, seconds or None)


@contextmanager
def grid_display(total: int, bars: bool) -> Iterator[CellDone]:
    """What the grid calls as each cell finishes: a bar over the cells (trainers' bars
    nest in it) if ``bars``, else one flushed line per cell: ``[3/60] ok 12.4 s <cell>``."""
    if bars:
        with active(make_progress()) as bar:
            task = bar.add_task("grid", total=total)

            def advance(label: str, status: str, seconds: Any) -> None:
                bar.update(task, advance=1, description=f"grid (last: {label}: {status})")

            yield advance
        return
    done = 0

    def line(label: str, status: str, seconds: Any) -> None:
        nonlocal done
        done += 1
        took = f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "- s"
        print(f"[{done}/{total}] {status} {took} {label}", file=sys.stdout, flush=True)

    yield line
