"""Adversarially-enhanced self-meta learning: the meta-splits and the self-consistency term.

Our reading of DDDefense's self-meta phase (the paper's details are not public; see
``/work/shared/ALGORITHMS.md``), in the style of MLDG (Li et al. 2018) and of the same
author's Meta Invariance Defense: every step splits the batch's identities into
meta-train and meta-test groups and the attack pool into seen and held-out attacks.
The meta-train loss (meta-train identities under a seen attack) takes a virtual SGD
step; the meta-test loss (meta-test identities under a held-out attack) is evaluated
at the stepped weights; the real update follows the sum of both gradients, first order
(the meta-test gradient taken at the stepped weights is applied to the original ones,
as first-order MAML does; ``benchbench.reid.meta.first_order_meta_step``, shared with
MID). A gradient that only helps on the identities and attack of
the inner step is thereby not enough: it must also help on identities and an attack
the inner step did not see.

"Self": the model is its own teacher. ``self_consistency`` ties the adversarial
feature of an image to the detached clean feature of the same image, so the encoder,
which ReID keeps at inference, holds the robustness rather than the classifier.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from benchbench import distributed
from benchbench.errors import ConfigError


def split_identities(pids: torch.Tensor, train_ratio: float,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks (meta-train, meta-test) over the batch that split its identities
    at random, each side with at least two identities (a metric loss needs negatives)."""
    ids = pids.unique()
    if len(ids) < 4:
        world = distributed.world_size()  # each of W processes splits its share of the batch's identities
        raise ConfigError(f"self-meta splits a batch's identities in two groups of >= 2; the batch has "
                          f"{len(ids)} identities{' on this process' if world > 1 else ''}: raise the task's "
                          f"ids_per_batch to >= {4 * world} or set self_meta: false")
    n_train = min(max(round(train_ratio * len(ids)), 2), len(ids) - 2)
    chosen = ids[torch.randperm(len(ids), generator=generator)[:n_train]]
    train = torch.isin(pids, chosen)
    return train, ~train


def split_pool(pool: Sequence[str], seen_ratio: float, generator: torch.Generator) -> tuple[list[str], list[str]]:
    """(seen, held-out) attack names, both non-empty; a one-attack pool is both."""
    if len(pool) < 2:
        return list(pool), list(pool)
    n_seen = min(max(round(seen_ratio * len(pool)), 1), len(pool) - 1)
    order = torch.randperm(len(pool), generator=generator).tolist()
    return [pool[i] for i in order[:n_seen]], [pool[i] for i in order[n_seen:]]


def self_consistency(adv_features: torch.Tensor, clean_features: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between normalised adversarial features and the detached
    normalised clean features of the same images (the model as its own teacher)."""
    return (F.normalize(adv_features, dim=1) - F.normalize(clean_features.detach(), dim=1)).pow(2).sum(1).mean()
