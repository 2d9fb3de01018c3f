"""What makes a cell's numbers a function of its config alone.

Three things outside the config used to move published numbers:

- **the torch thread count**: CPU kernels (matmul, convolution reductions) sum in an
  order that depends on how many threads split the work, so ``--jobs 1`` and ``--jobs 2``
  gave different floats. A cell now runs with the grid's ``threads`` (a config field, in
  the cell key and in every stage key) whatever the executor; ``--jobs`` only says how
  many cells run at once.
- **the global RNGs**: a cell that *builds* a stage consumes global random numbers that
  a cell which *hits* the same stage does not, so which worker got there first changed
  what came after. Each cell starts from RNGs seeded by its own seed, and every stage
  build runs on forked RNGs that are restored when it returns.
- **diverged training**: a NaN model ranked every gallery entry as a perfect match.
  Trainers and evaluators call ``require_finite`` and the cell fails with
  ``DivergedError`` instead of caching and scoring the NaN model.

Torch is imported inside the functions, so importing this module stays cheap.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator, Mapping

import numpy as np

from benchbench.errors import DivergedError

DEFAULT_THREADS = 1


@contextmanager
def isolated_rng(seed: int | None = None) -> Iterator[None]:
    """Fork Python's, NumPy's and torch's global RNGs for the block (seeding them with
    ``seed`` if given) and restore them afterwards, so the block's random draws do not
    shift anyone else's."""
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op torch threads, then restore the old count
    (the in-process executor shares the driver's torch)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def cell_numerics(threads: int, seed: int) -> Iterator[None]:
    """The numeric environment of one cell: a fixed thread count and global RNGs seeded
    by the cell's seed, whichever process runs it and whatever ran there before."""
    with torch_threads(threads), isolated_rng(seed):
        yield


def require_finite(value, what: str) -> None:
    """Raise ``DivergedError`` naming ``what`` if ``value`` (a number, a tensor, or a
    mapping of them, e.g. a step's loss terms) holds a NaN or an infinity."""
    import torch

    items = value.items() if isinstance(value, Mapping) else [(None, value)]
    for name, v in items:
        finite = bool(torch.isfinite(v).all()) if isinstance(v, torch.Tensor) else bool(np.isfinite(v).all())
        if not finite:
            label = f"{what} ({name})" if name is not None else what
            raise DivergedError(f"{label} is not finite (NaN or inf): training diverged; lower lr "
                                f"or check the data")


def require_finite_weights(module, what: str) -> None:
    """``require_finite`` over every parameter of a trained ``torch.nn.Module``."""
    for name, param in module.named_parameters():
        require_finite(param.detach(), f"{what}: weight {name}")
