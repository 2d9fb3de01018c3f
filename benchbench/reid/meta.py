"""The first-order meta-update that ReID's meta-learning defenses share.

MLDG (Li et al. 2018) and first-order MAML in one step: a virtual SGD step on the
meta-train loss, the meta-test loss at the stepped weights, and a real optimizer step
along the sum of both gradients taken back to the original weights. DDDefense's
self-meta phase (meta-train/-test identities and attacks) and MID (seen/held-out
attacks of its attacker pool) differ in what their two losses are, not in the update.

Under several processes (``benchbench.distributed``) each rank computes both losses on
its share of the batch, and both gradients are averaged over the ranks before they are
used: the virtual step moves every replica to the same theta', and the real step is the
same on every rank (two flattened all-reduces per update).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from benchbench import distributed


def first_order_meta_step(params: Sequence[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                          meta_train_loss: Callable[[], torch.Tensor], meta_test_loss: Callable[[], torch.Tensor],
                          inner_lr: float, meta_test_weight: float = 1.0) -> tuple[float, float]:
    """One first-order meta-update of ``params``; returns (meta-train, meta-test) losses.

    theta' = theta - inner_lr * grad L_train(theta); the optimizer then steps theta along
    grad L_train(theta) + meta_test_weight * grad L_test(theta'). The losses are
    closures so that the meta-test one (e.g. its attack) runs at theta'. Parameters
    that do not require grad (a frozen head) are left out of both steps. The returned
    losses are this rank's (the trainer logs their mean over the ranks).
    """
    params = [p for p in params if p.requires_grad]
    train_loss = meta_train_loss()
    g_train = torch.autograd.grad(train_loss, params, allow_unused=True)
    g_train = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_train)]
    distributed.average(g_train)
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, g in zip(params, g_train):
            p.sub_(inner_lr * g)
    test_loss = meta_test_loss()
    g_test = torch.autograd.grad(test_loss, params, allow_unused=True)
    distributed.average([g for g in g_test if g is not None])
    with torch.no_grad():
        for p, w in zip(params, saved):
            p.copy_(w)
    optimizer.zero_grad(set_to_none=True)
    for p, g_tr, g_te in zip(params, g_train, g_test):
        p.grad = g_tr if g_te is None else g_tr + meta_test_weight * g_te
    optimizer.step()
    return float(train_loss.detach()), float(test_loss.detach())
