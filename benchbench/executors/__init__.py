"""Executors run cells and yield their results; only the driver writes the store.

An executor is anything with ``map(items, env) -> iterator of (key, result)`` where
``items`` is a list of ``(key, CellSpec dict)``. Results may come back in any order.
"""
from __future__ import annotations

from typing import Any, Iterator, Protocol

from benchbench.registry import Registry
from benchbench.runner import Environment


class Executor(Protocol):
    def map(self, items: list[tuple[str, dict[str, Any]]], env: Environment,
            registry: Registry | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Run the cells; an in-process executor may use the driver's ``registry``,
        others rebuild one in each worker from ``env.plugins``."""


def make_executor(name: str, jobs: int | None = None, address: str | None = None) -> Executor:
    """``jobs``: local worker processes, ``None`` for ``local.default_jobs()``."""
    from benchbench.errors import ConfigError

    if name == "local":
        from benchbench.executors.local import LocalExecutor, default_jobs

        return LocalExecutor(jobs=default_jobs() if jobs is None else jobs)
    if name == "ray":
        from benchbench.executors.ray import RayExecutor

        return RayExecutor(address=address)
    raise ConfigError(f"unknown executor '{name}'; choose local or ray")
