"""FNES loss on hand-made features."""
from __future__ import annotations

import math

import pytest
import torch

from benchbench.reid.losses import soft_margin_triplet
from benchbench_dddefense.fnes import farthest_targets, fnes_loss

# two identities on a line: positives 1 apart, identities 10 apart
F2 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
P2 = torch.tensor([0, 0, 1, 1])


def test_small_temperature_without_extension_is_batch_hard_soft_margin():
    feats = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    pids = torch.arange(4).repeat_interleave(3)
    assert fnes_loss(feats, pids, None, temperature=1e-4) == pytest.approx(float(soft_margin_triplet(feats, pids)),
                                                                          rel=1e-4)


def test_value_by_hand():
    """Anchors 0 and 3 have d_ap = 1 and negatives at (10, 11); anchors 1 and 2 at (9, 10).
    The temperature is relative to the mean negative distance."""
    def soft_negative(d, tau=0.1):
        d = torch.tensor(d)
        return float(torch.softmax(-d / (tau * d.mean()), 0) @ d)

    d0, d1 = soft_negative([10.0, 11.0]), soft_negative([9.0, 10.0])
    assert 10 < d0 < 10.5 and 9 < d1 < 9.5  # between the hardest and the mean negative
    expected = (2 * math.log1p(math.exp(1 - d0)) + 2 * math.log1p(math.exp(1 - d1))) / 4
    assert float(fnes_loss(F2, P2, None, temperature=0.1)) == pytest.approx(expected, rel=1e-5)


def test_a_pulled_target_raises_the_loss_and_is_pushed_away():
    """The extension matters when the attack pulled an anchor toward its far target: the
    loss grows and its gradient moves the anchor away from the target."""
    feats = F2.clone().requires_grad_(True)
    far = torch.tensor([[10.0, 0.0], [10.0, 0.0], [0.5, 0.0], [0.5, 0.0]])
    base = fnes_loss(feats, P2, far, temperature=0.1)
    near = far.clone()
    near[0] = torch.tensor([0.5, 0.5])  # anchor 0's target is now right next to it
    pulled = fnes_loss(feats, P2, near, temperature=0.1)
    assert pulled > base + 0.05
    grad, = torch.autograd.grad(pulled, feats)
    step = feats.detach() - 0.1 * grad
    assert (step[0] - near[0]).norm() > (F2[0] - near[0]).norm()


def test_higher_temperature_softens_toward_the_mean_negative():
    far = farthest_targets(F2, P2)
    hard = fnes_loss(F2, P2, far, temperature=0.01)
    soft = fnes_loss(F2, P2, far, temperature=100.0)
    assert soft < hard  # the mean negative is farther than the hardest one


def test_farthest_targets_are_other_identity_prototypes():
    feats = torch.tensor([[0.0, 0.0], [0.0, 1.0], [5.0, 0.0], [5.0, 1.0], [-20.0, 0.0], [-20.0, 2.0]])
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    t = farthest_targets(feats, pids)
    assert t[0].tolist() == [-20.0, 1.0] and t[4].tolist() == [5.0, 0.5]
