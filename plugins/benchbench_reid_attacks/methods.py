"""The metric attacks as ``torchattacks.Attack`` subclasses (usable without benchbench).

Each per-image class holds only what makes its method: where its guides come from and
which objective it ascends; the PGD loop, projection and momentum are
``benchbench.reid.attack.MetricAttack``. ``UniversalPerturbation`` fits one
perturbation for all images instead. ``f`` is the embedding, ``f^`` its L2-normalised form.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchattacks.attack import Attack

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
    guide but for GOAT's "whatever its identity"); ``pull="none"`` drops the pull term
    (GOAT's push-only training attack). ``push=False`` is FNA-pull. Reads the labels of
    that set (query labels at test time), never the gallery's.
    """

    PULLS = {"prototype": farthest_prototype, "feature": farthest_feature, "none": None}

    def __init__(self, *args, pull: str = "prototype", push: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not push and pull == "none":
            raise ValueError("FNA with push=False and pull='none' has no objective: keep one of the two terms")
        self.pull, self.push = pull, push

    def guides(self, features: torch.Tensor, pids: torch.Tensor) -> Guides:
        g = same_identity_guides(features, pids)
        if self.PULLS[self.pull] is not None:
            g.pull = self.PULLS[self.pull](features, pids)
        return g

    def objective(self, features: torch.Tensor, guides: Guides) -> torch.Tensor:
        pull = (features - guides.pull).pow(2).sum(1) if guides.pull is not None else 0.0
        return (masked_sq_dist(features, guides.push, guides.push_mask) if self.push else 0.0) - pull


class UniversalPerturbation(Attack):
    """One perturbation for every image: ``x' = clip(x + delta)``, ``||delta||_inf <= eps``.

    ``delta`` is fitted on ``train_images`` (uint8 or [0, 1]; the training identities,
    disjoint from the test ones) by signed-gradient ascent over shuffled mini-batches
    of the label-free objective sum ||f^(x + delta) - f^(x)||^2 (the SGD form of a UAP,
    Shafahi et al. "Universal adversarial training", with Bai's normalised feature
    distance as the objective), from a uniform random start; then added to whatever
    images the attack is called on, so it transfers to unseen identities or it does not.
    Fitted on first call and kept: every later call adds the same ``delta``.
    """

    def __init__(self, model: torch.nn.Module, eps: float, alpha: float, epochs: int,
                 train_images: torch.Tensor, seed: int = 0, batch_size: int = 64):
        super().__init__(type(self).__name__, model)
        self.eps, self.alpha, self.epochs, self.batch_size = eps, alpha, epochs, batch_size
        self.train_images = train_images
        self.generator = torch.Generator().manual_seed(seed)
        self.delta: torch.Tensor | None = None

    def _train_batch(self, index: torch.Tensor) -> torch.Tensor:
        x = self.train_images[index]
        return (x.float().div(255) if x.dtype == torch.uint8 else x).to(self.device)

    @torch.enable_grad()
    def fit(self) -> torch.Tensor:
        n = len(self.train_images)
        delta = (torch.rand((1, *self.train_images.shape[1:]), generator=self.generator) * 2 - 1) * self.eps
        delta = delta.to(self.device)
        for _ in range(self.epochs):
            for index in torch.randperm(n, generator=self.generator).split(self.batch_size):
                x = self._train_batch(index)
                with torch.no_grad():
                    clean = F.normalize(self.get_logits(x), dim=1)
                delta.requires_grad_(True)
                adv = F.normalize(self.get_logits((x + delta).clamp(0, 1)), dim=1)
                grad, = torch.autograd.grad((adv - clean).pow(2).sum(), delta)
                delta = (delta.detach() + self.alpha * grad.sign()).clamp(-self.eps, self.eps)
        return delta.detach()

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.delta is None:
            self.delta = self.fit()
        if images.shape[1:] != self.delta.shape[1:]:
            raise ValueError(f"images of shape {tuple(images.shape[1:])} but the universal perturbation "
                             f"was fitted on {tuple(self.delta.shape[1:])}: resize them to the training size")
        return (images.to(self.device) + self.delta).clamp(0, 1)
