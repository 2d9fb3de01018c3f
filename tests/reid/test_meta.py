"""The shared first-order meta-update (DDDefense's self-meta, MID)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchbench.reid.meta import first_order_meta_step


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


def test_meta_step_leaves_frozen_parameters_alone():
    """MID freezes the teacher's classifier head in the student: neither step may move it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    net[2].requires_grad_(False)
    head = [p.detach().clone() for p in net[2].parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=5e-4)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    loss = lambda: nn.functional.cross_entropy(net(x), y)  # noqa: E731
    first_order_meta_step(list(net.parameters()), opt, loss, loss, inner_lr=0.1)
    assert all(torch.equal(b, p) for b, p in zip(head, net[2].parameters()))
