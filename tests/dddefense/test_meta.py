"""Self-meta phase: splits are disjoint, the first-order update moves the weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchbench.errors import ConfigError
from benchbench_dddefense.meta import first_order_meta_step, self_consistency, split_identities, split_pool


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


def test_first_order_meta_step_uses_the_meta_test_gradient_at_the_stepped_weights():
    """With plain SGD (lr 1) the update is -(g_train(w) + g_test(w - a g_train(w)));
    checked against the closed form for quadratic losses."""
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0])
    train_loss = lambda: 0.5 * (w - a).pow(2).sum()  # noqa: E731 - gradient w - a
    test_loss = lambda: 0.5 * (w - b).pow(2).sum()  # noqa: E731 - gradient w - b
    w0 = w.detach().clone()
    lt, le = first_order_meta_step([w], opt, train_loss, test_loss, inner_lr=0.5)
    g_train = w0 - a
    w_prime = w0 - 0.5 * g_train
    expected = w0 - (g_train + (w_prime - b))
    assert torch.allclose(w.detach(), expected)
    assert lt == pytest.approx(0.5 * float((w0 - a).pow(2).sum()))
    assert le == pytest.approx(0.5 * float((w_prime - b).pow(2).sum()))


def test_meta_step_changes_a_network_and_restores_nothing_else():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    before = [p.detach().clone() for p in net.parameters()]
    loss = lambda: nn.functional.cross_entropy(net(x), y)  # noqa: E731
    first_order_meta_step(list(net.parameters()), opt, loss, loss, inner_lr=0.1)
    assert all(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
