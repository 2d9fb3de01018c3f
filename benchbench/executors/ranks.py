"""Cells on several processes each, as ``torchrun`` launches them: rank 0 leads, the others follow.

``torchrun --nproc_per_node N -m benchbench cell CONFIG KEY`` (or ``... grid CONFIG``)
starts the same command N times. Every process joins the process group
(``benchbench.distributed.init_from_env``); then rank 0 runs the ordinary grid driver
(config, store, claims, one row per cell) with ``LeaderExecutor``, which runs each cell
in its own process after broadcasting it, and the other ranks ``follow``: they run every
cell rank 0 broadcasts beside it, so the training's collectives pair up, and write
nothing. Stages are built together (``StageCache``: rank 0 publishes them) and
checkpoints are rank 0's (``Checkpointer.save``), so a killed job resumes as one
process's grid does.

Rank 0 always broadcasts the end (``run_led``), whatever ends its grid (every cell stored
already, an error, Ctrl-C), so a follower never waits for a cell that will not come;
then every rank leaves the process group together (``distributed.leave``) before it
exits. A cell that fails on one rank only (a file only that rank could not read) leaves
the others in a collective until the backend's timeout: run the cell on one process to
see its error.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any, Callable, Iterator, TypeVar

from benchbench import distributed
from benchbench.registry import Registry
from benchbench.runner import Environment, run_cell

T = TypeVar("T")


class LeaderExecutor:
    """Rank 0's executor: each cell is broadcast to the followers, then run in-process."""

    def __init__(self) -> None:
        self.stopped = False

    def map(self, items: list[tuple[str, dict[str, Any]]], env: Environment,
            registry: Registry | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, spec in items:
            distributed.broadcast_object((spec, replace(env, progress=False)))
            yield key, run_cell(spec, env, registry)

    def stop(self) -> None:
        """Tell the followers there is no next cell (once)."""
        if not self.stopped:
            self.stopped = True
            distributed.broadcast_object(None)


def follow(registry: Registry | None = None) -> int:
    """A follower rank: run every cell rank 0 broadcasts, until it broadcasts the end;
    return how many ran. Results stay here: rank 0 records them."""
    ran = 0
    while (job := distributed.broadcast_object()) is not None:
        spec, env = job
        result = run_cell(spec, env, registry)
        if result["status"] != "ok":  # rank 0 now waits in a collective: say why on stderr
            print(f"rank {distributed.rank()}: the cell failed here, rank 0 may wait for it until the backend's "
                  f"timeout: {result.get('error')}\n{result.get('traceback', '')}", file=sys.stderr, flush=True)
        ran += 1
    return ran


def run_led(lead: Callable[[LeaderExecutor], T], registry: Registry | None = None) -> T | None:
    """``lead(executor)`` on rank 0 (the grid driver, given the leader's executor) and
    ``follow`` on every other rank; rank 0's return value, None elsewhere."""
    if not distributed.is_main():
        follow(registry)
        distributed.leave()
        return None
    executor = LeaderExecutor()
    try:
        return lead(executor)
    finally:
        executor.stop()
        distributed.leave()
