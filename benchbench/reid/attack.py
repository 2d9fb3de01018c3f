"""Shared machinery of the metric attacks: L-inf PGD on a feature-space objective.

Every ReID metric attack (Bai's metric FGSM/I-FGSM/MI-FGSM, Bouniot's SMA and FNA,
Zheng's ODFA) is the same loop: take the clean features of the images it is given,
derive *guides* from them, and move each image within the epsilon ball to increase an
objective of its adversarial feature and its guides. ``MetricAttack`` is that loop as
a ``torchattacks.Attack``; a method subclasses it with two functions, ``guides`` and
``objective``. The guide helpers below (same-identity sets, farthest identity
prototype, farthest single feature) are shared by the attacks and by adversarial
training.

Guides come from the set the attack is called on (the whole query set at test time,
the batch during adversarial training), so ``attack(images, pids)`` must receive every
image whose clean feature may guide another; the loop itself runs in chunks of
``batch_size``. Bai's main setting attacks the gallery instead, guided by the queries:
``attack(gallery, gallery_pids, guide_images=queries, guide_pids=query_pids)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchattacks.attack import Attack

from benchbench.reid.losses import pairwise_distances


def bai_steps(eps: float) -> int:
    """Iterations of Bai's I-FGSM for an epsilon in /255 units: min(eps + 4, 1.25 eps)."""
    return max(1, int(min(eps + 4, 1.25 * eps)))


@dataclass
class Guides:
    """Per-image guide features. ``push``: (N, M, D) with ``push_mask`` (N, M) marking
    real entries; ``pull``: (N, D) or None. ``random_start`` (N,) marks images that must
    start from a random point of the eps ball whatever the attack's own setting: those
    guided by their own clean feature alone, whose objective has zero gradient at the
    clean image."""

    push: torch.Tensor
    push_mask: torch.Tensor
    pull: torch.Tensor | None = None
    random_start: torch.Tensor | None = None

    def __getitem__(self, index: slice | torch.Tensor) -> "Guides":
        return Guides(*(None if t is None else t[index]
                        for t in (self.push, self.push_mask, self.pull, self.random_start)))

    def to(self, device: torch.device | str) -> "Guides":
        return Guides(*(None if t is None else t.to(device)
                        for t in (self.push, self.push_mask, self.pull, self.random_start)))


def self_guides(features: torch.Tensor) -> Guides:
    """Each image's own clean feature (label-free attacks)."""
    return Guides(features[:, None, :], torch.ones(len(features), 1, dtype=torch.bool))


def _guides_where(features: torch.Tensor, same: torch.Tensor) -> Guides:
    """Guides of image i: the rows j of ``features`` with ``same[i, j]``, padded and masked."""
    width = max(1, int(same.sum(1).max()))
    order = same.float().argsort(dim=1, descending=True, stable=True)[:, :width]  # same-id first
    mask = same.gather(1, order)
    return Guides(features[order], mask)


def same_identity_guides(features: torch.Tensor, pids: torch.Tensor, include_self: bool = True) -> Guides:
    """The clean features of every image with the same identity, the image itself included
    unless ``include_self`` is False (then an image alone in its identity has no guide)."""
    same = pids[:, None] == pids[None, :]  # (N, N)
    if not include_self:
        same &= ~torch.eye(len(pids), dtype=torch.bool)
    return _guides_where(features, same)


def cross_set_guides(guide_features: torch.Tensor, guide_pids: torch.Tensor, pids: torch.Tensor) -> Guides:
    """For each image, the clean features of another set's images of its identity (Bai's
    gallery attack: the queries of each gallery image's identity). An image whose
    identity is absent from that set (a distractor) has no guide."""
    return _guides_where(guide_features, pids[:, None] == guide_pids[None, :])


def other_same_identity_guides(features: torch.Tensor, pids: torch.Tensor) -> Guides:
    """The clean features of the *other* images with the same identity; an image with none
    falls back to SMA's rule: pushed from its own clean feature, from a random start.

    Guiding an image by itself too adds a term with zero gradient at the clean image, so
    an image alone in its identity would never move (no random start in Bai's attacks).
    """
    guides = same_identity_guides(features, pids, include_self=False)
    lone = ~guides.push_mask.any(1)
    guides.push[lone, 0] = features[lone]
    guides.push_mask[lone, 0] = True
    guides.random_start = lone
    return guides


def identity_prototypes(features: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature of each identity: ``(ids, prototypes)``."""
    ids, inverse = pids.unique(return_inverse=True)
    sums = torch.zeros(len(ids), features.shape[1], dtype=features.dtype).index_add_(0, inverse, features)
    return ids, sums / torch.bincount(inverse).unsqueeze(1).to(features.dtype)


def farthest_prototype(features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """For each image, the prototype of the other identity farthest from it (FNA's pull guide)."""
    ids, protos = identity_prototypes(features, pids)
    dist = pairwise_distances(features, protos).masked_fill(pids[:, None] == ids[None, :], float("-inf"))
    return protos[dist.argmax(1)]


def farthest_feature(features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """For each image, the farthest feature of another identity (GOAT's in-batch pull guide,
    except that GOAT takes the farthest other image whatever its identity)."""
    dist = pairwise_distances(features).masked_fill(pids[:, None] == pids[None, :], float("-inf"))
    return features[dist.argmax(1)]


def masked_sq_dist(f: torch.Tensor, guides: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum over real guides of ||f - g||^2 per image (f: (B, D), guides: (B, M, D))."""
    return ((f[:, None, :] - guides).pow(2).sum(-1) * mask).sum(1)


class MetricAttack(Attack):
    """L-inf PGD in [0, 1] pixel space that *ascends* ``objective(features, guides)``.

    ``eps`` and ``alpha`` are in [0, 1] units (the components convert from /255).
    ``steps=1, alpha=eps, random_start=False`` is FGSM; ``momentum > 0`` is MI-FGSM
    (gradient normalised by its mean absolute value, as in Bai's code).
    """

    normalize_features = False  # objectives on f^ (Bai, ODFA) set True

    def __init__(self, model: torch.nn.Module, eps: float, alpha: float, steps: int,
                 random_start: bool = False, momentum: float = 0.0, seed: int = 0,
                 batch_size: int = 128):
        super().__init__(type(self).__name__, model)
        self.eps, self.alpha, self.steps = eps, alpha, steps
        self.random_start, self.momentum, self.batch_size = random_start, momentum, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        """What changes between calls (the random starts' generator, and the budget a
        training schedule may ramp): a training checkpoint saves it with its defense."""
        return {"generator": self.generator.get_state(), "eps": self.eps, "alpha": self.alpha}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.eps, self.alpha = state["eps"], state["alpha"]

    # -- what a method defines -------------------------------------------------
    def guides(self, features: torch.Tensor, pids: torch.Tensor) -> Guides:
        raise NotImplementedError

    def objective(self, features: torch.Tensor, guides: Guides) -> torch.Tensor:
        """Per-image value to increase, shape (B,)."""
        raise NotImplementedError

    # -- the shared loop -------------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        f = self.get_logits(images)
        return F.normalize(f, dim=1) if self.normalize_features else f

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                guide_images: torch.Tensor | None = None, guide_pids: torch.Tensor | None = None) -> torch.Tensor:
        """Attack ``images``, guided by the method's own rule on them; or, given
        ``guide_images`` and their ``guide_pids``, by the clean features of those of the
        same identity (Bai's gallery attack, guided by the queries): images without such
        a guide are returned clean."""
        images = images.clone().detach().to(self.device)
        pids = labels.detach().cpu() if labels is not None else torch.arange(len(images))
        if guide_images is None:
            return self._perturb_all(images, self.guides(self._clean(images), pids))
        guides = cross_set_guides(self._clean(guide_images.to(self.device)), guide_pids.cpu(), pids)
        guided = guides.push_mask.any(1)
        out = images.clone()
        if guided.any():
            out[guided.to(out.device)] = self._perturb_all(images[guided.to(images.device)], guides[guided])
        return out

    def _clean(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.embed(chunk).cpu() for chunk in images.split(self.batch_size)])

    def _perturb_all(self, images: torch.Tensor, guides: Guides) -> torch.Tensor:
        return torch.cat([self._perturb(images[i:i + self.batch_size], guides[i:i + self.batch_size])
                          for i in range(0, len(images), self.batch_size)])

    def _start(self, x0: torch.Tensor, forced: torch.Tensor | None) -> torch.Tensor:
        """The clean images, or a uniform point of the eps ball for every image when
        ``random_start`` is set and for the ``forced`` ones otherwise."""
        chosen = torch.full((len(x0),), self.random_start, dtype=torch.bool, device=x0.device)
        if forced is not None:
            chosen |= forced
        if not chosen.any():
            return x0.clone()
        noise = torch.rand(x0.shape, generator=self.generator).to(self.device) * 2 - 1
        start = (x0 + self.eps * noise).clamp(0, 1)
        return torch.where(chosen[:, None, None, None], start, x0)

    @torch.enable_grad()  # callers often extract features under no_grad
    def _perturb(self, x0: torch.Tensor, guides: Guides) -> torch.Tensor:
        guides = guides.to(self.device)
        x = self._start(x0, guides.random_start)
        velocity = torch.zeros_like(x0)
        for _ in range(self.steps):
            x.requires_grad_(True)
            loss = self.objective(self.embed(x), guides).sum()
            grad, = torch.autograd.grad(loss, x)
            if self.momentum > 0:
                grad = grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
                velocity = self.momentum * velocity + grad
                grad = velocity
            x = x.detach() + self.alpha * grad.sign()
            x = torch.min(torch.max(x, x0 - self.eps), x0 + self.eps).clamp(0, 1)
        return x.detach()
