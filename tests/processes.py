"""Run a test's job on several gloo processes on CPU, joined as torchrun would join them."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchbench import distributed

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, world: int, out: Path, job: Callable[..., Any], args: tuple) -> None:
    """A spawned process: join the group from torchrun's environment variables, run
    ``job`` and save its result as ``out/rank{rank}.pt``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)  # the processes share the machine's cores
    assert distributed.init_from_env("cpu") and distributed.world_size() == world
    try:
        torch.save(job(*args), out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def on_processes(tmp_path: Path, job: Callable[..., Any], *args: Any, world: int = WORLD,
                 timeout: float = 180.0) -> list[Any]:
    """``job(*args)``'s result on every rank of a ``world``-process gloo group, in rank
    order (tensors, containers and numbers: they are read back with ``weights_only``).
    A rank's exception fails the call (``torch.multiprocessing.ProcessRaisedException``);
    ranks still running after ``timeout`` seconds (one waiting in a collective the others
    never call) are killed and fail the test."""
    context = mp.spawn(_rank_main, args=(_free_port(), world, tmp_path, job, args), nprocs=world, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{getattr(job, '__name__', job)} on {world} processes did not end within {timeout:.0f} s: "
                        f"a rank is waiting in a collective the others did not call")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
