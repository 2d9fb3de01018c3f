"""The metric attacks as ``torchattacks.Attack`` subclasses (usable without benchbench).

Each class holds only what makes its method: where its guides come from and which
objective it ascends; the PGD loop, projection and momentum are
``benchbench.reid.attack.MetricAttack``. ``f`` is the embedding, ``f^`` its L2-normalised form.
"""
from __future__ import annotations

import torch

from benchbench.reid.attack import (Guides, MetricAttack, farthest_feature, farthest_prototype,
                                    masked_sq_dist, other_same_identity_guides, same_identity_guides,
                                    self_guides)


class MetricIterative(MetricAttack):
    """Bai et al.'s metric FGSM / I-FGSM / MI-FGSM: ascend sum_g ||f^(x') - f^(g)||^2.

    Bai attacks gallery images guided by the same-identity queries (so never by the
    image itself). Attacking queries, the guides are the clean features of every *other*
    query with the same identity: this reads the query labels, never the gallery's. A
    query alone in its identity has no such guide and falls back to SMA's rule (pushed
    from its own clean feature, from a random start), so no query is left unperturbed.
    """

    normalize_features = True

    def guides(self, features: torch.Tensor, pids: torch.Tensor) -> Guides:
        return other_same_identity_guides(features, pids)

    def objective(self, features: torch.Tensor, guides: Guides) -> torch.Tensor:
        return masked_sq_dist(features, guides.push, guides.push_mask)


class SelfMetricAttack(MetricAttack):
    """SMA (Bouniot et al.): ascend ||f(x') - f(x)||^2 from a random start. Label-free."""

    def guides(self, features: torch.Tensor, pids: torch.Tensor) -> Guides:
        return self_guides(features)

    def objective(self, features: torch.Tensor, guides: Guides) -> torch.Tensor:
        return masked_sq_dist(features, guides.push, guides.push_mask)


class OppositeDirectionAttack(MetricAttack):
    """ODFA (Zheng et al., U-turn): descend ||f^(x') - (-f^(x))||^2, i.e. turn the
    feature to the opposite direction. Label-free."""

    normalize_features = True

    def guides(self, features: torch.Tensor, pids: torch.Tensor) -> Guides:
        return self_guides(-features)

    def objective(self, features: torch.Tensor, guides: Guides) -> torch.Tensor:
        return -masked_sq_dist(features, guides.push, guides.push_mask)


class FurthestNegativeAttack(MetricAttack):
    """FNA (Bouniot et al.): ascend sum_i ||f(x') - g_i||^2 - ||f(x') - g_pull||^2.

    Push guides: the clean features of every image with the same identity in the set
    the attack is given (the query set; the batch in adversarial training). Pull guide:
    the mean feature of the farthest other identity (``pull="prototype"``, FNA) or the
    farthest single feature of another identity (``pull="feature"``, GOAT's in-batch
    guide but for GOAT's "whatever its identity"). ``push=False`` is FNA-pull. Reads the labels of that set (query labels at
    test time), never the gallery's.
    """

    def __init__(self, *args, pull: str = "prototype", push: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.pull, self.push = pull, push

    def guides(self, features: torch.Tensor, pids: torch.Tensor) -> Guides:
        g = same_identity_guides(features, pids)
        g.pull = (farthest_prototype if self.pull == "prototype" else farthest_feature)(features, pids)
        return g

    def objective(self, features: torch.Tensor, guides: Guides) -> torch.Tensor:
        pull = (features - guides.pull).pow(2).sum(1)
        return (masked_sq_dist(features, guides.push, guides.push_mask) if self.push else 0.0) - pull
