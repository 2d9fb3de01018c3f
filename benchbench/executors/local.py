"""Local execution: in-process (default, one cell at a time) or a process pool
(``--jobs N``) for machines with cores to spare. Either way a cell runs with the config's
``threads`` torch threads, so ``--jobs`` never changes a number."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from typing import Any, Iterator

from benchbench.registry import Registry
from benchbench.runner import Environment, run_cell


class LocalExecutor:
    def __init__(self, jobs: int = 1):
        self.jobs = max(1, jobs)

    def map(self, items: list[tuple[str, dict[str, Any]]], env: Environment,
            registry: Registry | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        if self.jobs == 1:  # in-process: reuse the driver's registry
            for key, spec in items:
                yield key, run_cell(spec, env, registry)
            return
        # spawn, not fork: forking a process that has torch threads running can deadlock.
        # Per-cell progress bars would interleave, so workers run quietly.
        env = replace(env, progress=False)
        ctx = multiprocessing.get_context("spawn")
        # each cell sets its own torch thread count (the config's ``threads``, see run_cell)
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx) as pool:
            futures = {pool.submit(run_cell, spec, env): key for key, spec in items}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
