"""The process group one training runs on: the one place for rank and world-size facts
and the few collectives the CLIP and ReID trainers need.

A cell may train on several processes (``torch.distributed``), each holding a replica
of the model and its part of every global batch (CLIP: a contiguous slice; ReID: a
share of the batch's identities with all their images). The process group is
whatever ``torch.distributed`` holds; ``init_from_env`` starts one from torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``),
with gloo on CPU and NCCL on CUDA. Launching the processes is the caller's business.

Without a process group (or with a group of one) every function here is a no-op that
returns its input: the single-process trainer runs exactly the code, and gets exactly
the numbers, it did before this module existed.

Every collective must be called by all ranks in the same order. The trainer calls them
at fixed points of each step (CLIP: the contrastive loss's gather, the gradient average,
the log's mean, the caption pools' gather; ReID: the gradient averages, the buffers'
average, the log's mean), which every rank reaches together because every rank runs the
same hooks on batches of the same size.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable, Sequence

from benchbench.errors import ConfigError

if TYPE_CHECKING:
    import torch


def initialised() -> bool:
    """Is a ``torch.distributed`` process group active in this process?"""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes training together (1 without a process group)."""
    import torch.distributed as dist

    return dist.get_world_size() if initialised() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if initialised() else 0


def is_main() -> bool:
    """Is this the rank that writes files (checkpoints, logs)?"""
    return rank() == 0


def backend(device: str) -> str:
    """The collective backend for a device: NCCL on CUDA, gloo on CPU."""
    return "nccl" if device.startswith("cuda") else "gloo"


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun's environment describes, if it names more than one
    process and none is active yet; on CUDA each process takes GPU ``LOCAL_RANK``.
    Returns whether a group of more than one process is active."""
    import torch
    import torch.distributed as dist

    if not initialised() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend(device), init_method="env://")
    return world_size() > 1


def shard(n: int, name: str = "batch_size") -> slice:
    """This rank's contiguous part of ``n`` rows (a global batch), or of ``n`` groups of
    rows (a ReID batch's identities): ``[rank * n / W, (rank + 1) * n / W)``. Refuses an
    ``n`` the ranks cannot split evenly, since uneven parts would weight the ranks' losses
    unequally; the error names ``name``, the setting to change."""
    world = world_size()
    if n % world:
        raise ConfigError(f"{name} {n} does not split over {world} processes; set {name} to a multiple "
                          f"of {world} (e.g. {n + world - n % world})")
    size = n // world
    return slice(rank() * size, (rank() + 1) * size)


def _collective_device() -> "torch.device":
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_module(module: "torch.nn.Module") -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module``, so the replicas
    start identical whatever built them (DistributedDataParallel does the same when it
    wraps a module). One process: nothing."""
    if world_size() == 1:
        return
    import torch.distributed as dist

    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def gather_rows(*tensors: "torch.Tensor | None") -> tuple["torch.Tensor | None", ...]:
    """Every rank's rows of each tensor, concatenated in rank order, without gradients:
    what one process holding the whole global batch would have. ``None`` stays ``None``;
    the tensors share their row count on a rank, which may differ between ranks.
    One process: the tensors themselves."""
    if world_size() == 1:
        return tensors
    import torch
    import torch.distributed as dist

    device = _collective_device()
    present = [t for t in tensors if t is not None]
    rows = torch.tensor([len(present[0]) if present else 0], device=device)
    counts = [torch.zeros_like(rows) for _ in range(world_size())]
    dist.all_gather(counts, rows)
    counts = [int(c) for c in counts]
    most = max(counts)

    def gather(t: "torch.Tensor | None") -> "torch.Tensor | None":
        if t is None:
            return None
        x = t.detach().to(device)
        x = x.to(torch.uint8) if x.dtype == torch.bool else x  # not every backend reduces bools
        padded = x.new_zeros((most, *x.shape[1:]))
        padded[:len(x)] = x
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        out = torch.cat([p[:c] for p, c in zip(parts, counts)])
        return out.to(device=t.device, dtype=t.dtype)

    return tuple(gather(t) for t in tensors)


def average(tensors: Sequence["torch.Tensor"]) -> None:
    """Replace each tensor, in place, by its mean over the ranks, with one all-reduce of
    the tensors flattened into one buffer. Every rank must pass tensors of the same
    shapes in the same order. One process: nothing."""
    world = world_size()
    if world == 1 or not tensors:
        return
    import torch
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def average_gradients(parameters: Iterable["torch.nn.Parameter"]) -> None:
    """Replace each gradient by its mean over the ranks, in one all-reduce (``average``:
    what DistributedDataParallel's reducer does, minus overlapping it with the backward
    pass). Parameters without a gradient are skipped: every rank must have gradients for
    the same parameters, which holds when all ranks run the same loss terms. One
    process: nothing."""
    average([p.grad for p in parameters if p.grad is not None])


def average_buffers(module: "torch.nn.Module") -> None:
    """Replace each floating-point buffer of ``module``'s state (BatchNorm's running mean
    and variance) by its mean over the ranks, so the replicas agree again after a step in
    which each normalised its own slice. Left alone: integer buffers
    (``num_batches_tracked``: every rank counts the same) and buffers outside the state
    dict (constants, such as an input normalisation's mean). One process: nothing."""
    if world_size() == 1:
        return
    import torch

    state = module.state_dict(keep_vars=True)
    average([t for t in state.values() if not isinstance(t, torch.nn.Parameter) and t.is_floating_point()])


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean over the ranks of each named number (a step's loss terms); a name missing
    on a rank counts 0 there (a term a rank's slice did not produce). Names keep their
    first appearance's order, rank 0 first. One process: ``values`` itself."""
    world = world_size()
    if world == 1:
        return values
    import torch.distributed as dist

    every: list[dict[str, float]] = [{} for _ in range(world)]
    dist.all_gather_object(every, values)
    names = list(dict.fromkeys(k for v in every for k in v))
    return {k: sum(v.get(k, 0.0) for v in every) / world for k in names}


def broadcast_object(obj: object = None) -> object:
    """Rank 0's ``obj`` on every rank (a decision only rank 0 may take, e.g. whether a
    stage is built or which cell runs next); JSON-like values. One process: ``obj``."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist

    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has committed a checkpoint). One process: nothing."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def leave() -> None:
    """End this process's part in the group: wait for every rank, then tear the group down.
    Exiting with a gloo group still up lets a rank that leaves first close its peers'
    connections under them, which gloo answers with SIGABRT (seen when a resumed
    torchrun job had no cell to run, so the ranks reached exit at different moments).
    No group: nothing."""
    if initialised():
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


__all__ = ["average", "average_buffers", "average_gradients", "backend", "barrier", "broadcast_module",
           "broadcast_object", "gather_rows", "init_from_env", "initialised", "is_main", "leave",
           "mean_over_ranks", "rank", "shard", "world_size"]
