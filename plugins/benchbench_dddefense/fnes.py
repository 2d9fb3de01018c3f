"""Farthest-negative extension softening (FNES): the metric loss of DDDefense's
adversarial training.

The paper's formula is not public (see ``/work/shared/ALGORITHMS.md``); this is our
reading, documented as such. The inner attack pushes an anchor away from its own
identity and pulls it toward the *farthest* other identity (FNA's objective, built
through the registry as the ``inner_attack`` param). Batch-hard triplet training only
looks at the closest negative, so the attack's target is invisible to it while it is
still far. FNES therefore

1. **extends** the negative set of every anchor with the prototype of its farthest
   negative identity (computed on clean features: the attack's pull target), and
2. **softens** the hard choices: the negative distance is a softmax(-d / (tau * s))-
   weighted mean over the extended set, with s the anchor's mean negative distance so
   that tau does not depend on the embedding's scale (tau -> 0 gives the hardest
   negative, a large tau the mean), and the hinge with a fixed margin becomes
   softplus(d_ap - d_neg).

A pulled adversarial feature brings its target close, which gives the target weight in
the mix and a gradient that pushes it back out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchbench.reid.attack import farthest_prototype
from benchbench.reid.losses import pairwise_distances


def farthest_targets(clean_features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """Each image's farthest other-identity prototype, from detached clean features."""
    return farthest_prototype(clean_features.detach(), pids)


def fnes_loss(features: torch.Tensor, pids: torch.Tensor, targets: torch.Tensor | None,
              temperature: float) -> torch.Tensor:
    """mean softplus(d_ap - d_neg) with d_ap the farthest positive and d_neg the
    softmax(-d / (temperature * mean d))-weighted mean distance to the negatives, the
    batch's negatives plus ``targets`` (one extra negative per anchor; None: no extension)."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    dist = pairwise_distances(features)
    same = pids[:, None] == pids[None, :]
    d_ap = dist.masked_fill(~same, float("-inf")).amax(1)
    d_neg = dist.masked_fill(same, float("inf"))
    if targets is not None:
        d_neg = torch.cat([d_neg, (features - targets).norm(dim=1, keepdim=True)], dim=1)
    finite = d_neg.masked_fill(torch.isinf(d_neg), 0.0)
    scale = (finite.sum(1) / (~torch.isinf(d_neg)).sum(1)).detach().clamp_min(1e-12)
    weights = torch.softmax(-d_neg / (temperature * scale[:, None]), dim=1)  # exp(-inf) = 0 for positives
    d_neg = (weights * finite).sum(1)
    return F.softplus(d_ap - d_neg).mean()
