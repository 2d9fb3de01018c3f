"""Self-meta phase: splits are disjoint, self-consistency compares directions (the update
itself is the core's: tests/reid/test_meta.py)."""
from __future__ import annotations

import pytest
import torch

from benchbench.errors import ConfigError
from benchbench_dddefense.meta import self_consistency, split_identities, split_pool


@pytest.mark.parametrize("seed", range(5))
def test_identity_split_is_disjoint_and_covers_the_batch(seed):
    pids = torch.arange(8).repeat_interleave(4)
    train, test = split_identities(pids, 0.5, torch.Generator().manual_seed(seed))
    tr, te = set(pids[train].tolist()), set(pids[test].tolist())
    assert not tr & te and tr | te == set(range(8)) and len(tr) == len(te) == 4
    assert (train ^ test).all()


def test_identity_split_keeps_two_ids_per_side_and_rejects_tiny_batches():
    pids = torch.arange(5).repeat_interleave(2)
    train, test = split_identities(pids, 0.95, torch.Generator().manual_seed(0))
    assert len(pids[test].unique()) == 2
    with pytest.raises(ConfigError, match="ids_per_batch"):
        split_identities(torch.tensor([0, 0, 1, 1, 2]), 0.5, torch.Generator())


def test_pool_split_is_disjoint_and_varies():
    pool = ["a", "b", "c", "d"]
    gen = torch.Generator().manual_seed(0)
    splits = [split_pool(pool, 0.5, gen) for _ in range(20)]
    for seen, held in splits:
        assert len(seen) == len(held) == 2 and not set(seen) & set(held) and set(seen) | set(held) == set(pool)
    assert len({tuple(sorted(s)) for s, _ in splits}) > 1
    assert split_pool(["only"], 0.5, gen) == (["only"], ["only"])


def test_self_consistency_is_zero_for_identical_directions_only():
    clean = torch.randn(4, 8)
    assert float(self_consistency(3 * clean, clean)) == pytest.approx(0.0, abs=1e-6)
    assert float(self_consistency(-clean, clean)) == pytest.approx(4.0, rel=1e-5)
