"""Progress bars that nest: the grid's bar over cells and a trainer's bar over epochs.

rich allows one live display at a time, so a trainer that opened its own ``Progress``
inside the grid's would raise. Trainers call ``progress(iterable, ...)``: inside a grid
it adds a transient row to the grid's display, outside it opens its own.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

T = TypeVar("T")
_active: Progress | None = None


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
    with active(make_progress()) as bar:
        yield from progress(items, description, total)
