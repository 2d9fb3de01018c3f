"""Local execution: in-process (``--jobs 1``, one cell at a time) or a process pool
(``--jobs N``; the command's default is ``default_jobs()``). Either way a cell runs with
the config's ``threads`` torch threads, so ``--jobs`` never changes a number.

A pool worker that dies (the OOM killer, a segfault) breaks the whole pool, and Python
cannot say which of the cells in flight killed it. So each cell leaves a marker file
when it starts: after a break, the cells that had started are re-run one at a time in a
process of their own, whose exit code names the killer (``WorkerDied: ... (SIGKILL)``);
the cells that had not started go to a fresh pool. Finished results are never lost.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Any, Generator, Iterator

from benchbench.registry import Registry
from benchbench.runner import Environment, run_cell

Item = tuple[str, dict[str, Any]]  # (cell key, CellSpec dict)


def default_jobs() -> int:
    """``--jobs`` when not given: two workers, or one on a single core. Two single-threaded
    workers beat one two-threaded one on the tiny default models (README); more workers
    each hold their own torch and data set in memory, so going wider is the user's call."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))


class LocalExecutor:
    def __init__(self, jobs: int = 1):
        self.jobs = max(1, jobs)

    def map(self, items: list[Item], env: Environment,
            registry: Registry | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        if self.jobs == 1:  # in-process: reuse the driver's registry
            for key, spec in items:
                yield key, run_cell(spec, env, registry)
            return
        # spawn, not fork: forking a process that has torch threads running can deadlock.
        # Per-cell progress bars would interleave, so workers run quietly.
        env = replace(env, progress=False)
        ctx = multiprocessing.get_context("spawn")
        pending = list(items)
        while pending:
            suspects, rest = yield from self._pool_round(pending, env, ctx)
            if not suspects and len(rest) == len(pending):  # the pool broke before any cell began
                suspects, rest = rest[:1], rest[1:]
            pending = rest
            for key, spec in suspects:
                yield key, _run_alone(spec, env, ctx)

    def _pool_round(self, items: list[Item], env: Environment,
                    ctx) -> Generator[tuple[str, dict[str, Any]], None, tuple[list[Item], list[Item]]]:
        """Run ``items`` in one pool, yielding results until they are done or the pool
        breaks; return ``(started, not started)`` cells that the break lost."""
        lost: list[Item] = []
        with tempfile.TemporaryDirectory(prefix="benchbench-started-") as started, \
                ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx) as pool:  # cells set their threads
            futures = {pool.submit(_run_marked, spec, env, str(Path(started) / key)): (key, spec)
                       for key, spec in items}
            try:
                for fut in as_completed(futures):
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        lost.append(futures[fut])
                        continue
                    yield futures[fut][0], result
            except BaseException:  # interrupted, or the driver stopped reading: stop now
                _stop(pool)
                raise
            began = {p.name for p in Path(started).iterdir()}
        return [i for i in lost if i[0] in began], [i for i in lost if i[0] not in began]


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued cells and end the running ones. Workers catch the KeyboardInterrupt
    of a Ctrl-C inside a cell and would go on to the next one, and the driver would wait
    for them at exit. (Python < 3.14 has no public ``terminate_workers``.)"""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() drops them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        proc.terminate()


def _run_marked(spec: dict[str, Any], env: Environment, marker: str) -> dict[str, Any]:
    """In a pool worker: leave a marker that this cell started, then run it."""
    Path(marker).touch()
    return run_cell(spec, env)


def _run_alone(spec: dict[str, Any], env: Environment, ctx) -> dict[str, Any]:
    """Run one cell in a process of its own; if that process dies, a ``failed`` result
    naming the signal or exit code."""
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_send_result, args=(send, spec, env), daemon=True)
    proc.start()
    send.close()  # so that recv() sees EOF when the child dies
    try:
        return receive.recv()
    except EOFError:
        proc.join()
        return _worker_died(proc.exitcode)
    finally:
        receive.close()
        if proc.is_alive():  # interrupted
            proc.terminate()
        proc.join()


def _send_result(conn, spec: dict[str, Any], env: Environment) -> None:
    conn.send(run_cell(spec, env))
    conn.close()


def _worker_died(exitcode: int | None) -> dict[str, Any]:
    """The ``failed`` result of a cell whose process died: SIGKILL is most often the OOM killer."""
    if exitcode is not None and exitcode < 0:
        how = f"killed by {signal.Signals(-exitcode).name}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
    else:
        how, hint = f"exited with code {exitcode}", ""
    error = (f"WorkerDied: the process running this cell was {how}{hint}; it died again when "
             f"re-run alone")
    return {"status": "failed", "metrics": {}, "components": {}, "stages": {}, "error": error,
            "traceback": None, "wall_seconds": None}
