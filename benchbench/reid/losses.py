"""Metric-learning pieces torchreid does not expose: batch-hard mining and its soft-margin loss.

torchreid's ``TripletLoss`` (hard margin) mines inside ``forward``; defenses that change
the negative set (farthest negatives, softened margins) need the mined distances
themselves, so mining lives here once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distances(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distances, with a floor so the gradient at zero distance is finite."""
    y = x if y is None else y
    sq = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2 * x @ y.T
    return sq.clamp_min(1e-12).sqrt()


def batch_hard(features: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each anchor, distance to its farthest positive and its closest negative
    (Hermans et al., the mining of torchreid's ``TripletLoss``)."""
    dist = pairwise_distances(features)
    same = pids[:, None] == pids[None, :]
    d_ap = dist.masked_fill(~same, float("-inf")).amax(1)
    d_an = dist.masked_fill(same, float("inf")).amin(1)
    return d_ap, d_an


def soft_margin_triplet(features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """mean softplus(d_ap - d_an) over batch-hard triplets (no margin to tune)."""
    d_ap, d_an = batch_hard(features, pids)
    return F.soft_margin_loss(d_an - d_ap, torch.ones_like(d_an))
