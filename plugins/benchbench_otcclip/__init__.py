"""OTCCLIP (Zhang, Gao, Bai et al., EMNLP 2025, arXiv 2509.18717), *our reading*.

The paper's body and code were not readable here; what is known: captions are
re-assigned by an optimal-transport distance between fine-grained visual features
(patch tokens) and textual features (word tokens), combined with global features, and
OT-based inter- and intra-modality alignment objectives are added to contrastive
learning (Sinkhorn iterations, a caption pool). Our reading (ALGORITHMS.md), each
choice a param:

- matching: RoCLIP's loop and pool (``PoolRematchingDefense``), but each image's
  ``shortlist`` nearest pooled captions by global cosine are re-ranked by
  ``s = cos(global) - lam * d_OT``, d_OT the entropic OT distance (cost 1 - cos, uniform
  marginals, padding and start/end tokens masked) between the image's patch tokens and
  the caption's word tokens; the global nearest neighbour is logged next to the OT
  choice, so the ``rematch`` evaluator compares both rules on the same embeddings;
- inter-modality loss: InfoNCE over the batch with ``-d_OT(patch tokens of image i,
  word tokens of caption j)`` as similarities (caption = the matched pooled caption in
  matching epochs, the own caption otherwise);
- intra-modality loss: the same OT InfoNCE between the patch tokens of two augmented
  views of each image, and between the word tokens of two EDA views of each caption
  (the ``default`` preset has no augmentation, so there the two views are the same
  pair and the loss only spreads the token sets of different pairs apart);
- L = L_CLIP + alpha L_inter + beta L_intra. The OT losses run on the first
  ``ot_batch`` pairs of each batch (all by default): B^2 OT problems per step is the
  dominant cost on a CPU.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

import benchbench
from benchbench.clip.augment import augment_batch
from benchbench.clip.model import Features
from benchbench.clip.rematch import CPU_WARM_UP, PoolParams, PoolRematchingDefense, nearest, ot_rerank
from benchbench.clip.trainer import Batch, TrainState
from benchbench.ot import pairwise_ot_distances


def ot_infonce(x: Tensor, y: Tensor, logit_scale: Tensor, reg: float, *, x_mask: Tensor | None = None,
               y_mask: Tensor | None = None, max_iter: int = 100, tol: float = 1e-4) -> Tensor:
    """Symmetric InfoNCE whose similarities are ``-d_OT`` between token sets: set i of
    x (B, P, D) against every set j of y (B, T, D), positives on the diagonal. The logits
    ``-logit_scale * d_OT`` are CLIP's ``logit_scale * cos`` with the cosine of two global
    embeddings replaced by ``1 - d_OT`` of their token sets (a shift CE ignores).
    Gradients reach the tokens through the cost (envelope theorem, ``benchbench.ot``)."""
    d = pairwise_ot_distances(x, y, reg, x_mask=x_mask, y_mask=y_mask, max_iter=max_iter, tol=tol)
    logits = -logit_scale * d
    target = torch.arange(len(x), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class OTCCLIP(PoolRematchingDefense):
    name = "otcclip"
    version = "2"  # 2: benchbench.ot gained a Newton phase; distances, hence results, moved
    description = "OTCCLIP (our reading): pool re-matching re-ranked by patch/word-token OT, plus OT alignment losses"
    needs_tokens: ClassVar[bool] = True

    class Params(PoolParams):
        shortlist: int = Field(10, ge=1, description="pooled captions per image pre-selected by global cosine, "
                                                     "then re-ranked by the OT score")
        lam: float = Field(1.0, ge=0, description="lambda in s = cos(global) - lambda * d_OT")
        reg: float = Field(0.05, gt=0, description="entropic regularisation of Sinkhorn (cost 1 - cos in [0, 2])")
        sinkhorn_iters: int = Field(100, ge=1, description="Sinkhorn iteration cap")
        sinkhorn_tol: float = Field(1e-4, gt=0, description="Sinkhorn stopping tolerance (L1 marginal error)")
        alpha: float = Field(0.5, ge=0, description="weight of the inter-modality OT loss")
        beta: float = Field(0.5, ge=0, description="weight of the intra-modality OT loss")
        ot_batch: int | None = Field(None, ge=2, description="pairs of each batch the OT losses use (None: all)")

    presets: ClassVar = {
        "smoke": {"pool_size": 128, "augment_group": 16, "match_every": 1, "first_match_epoch": 1,
                  "shortlist": 4, "ot_batch": 16, "sinkhorn_iters": 30},
        "default": {"pool_size": 2048, **CPU_WARM_UP, "shortlist": 5, "ot_batch": 16, "sinkhorn_iters": 50},
        "paper": {},
    }

    def augment(self, batch: Batch, state: TrainState) -> Batch:
        self.raw = batch  # the intra-modality loss draws a second view of the same pairs
        return super().augment(batch, state)

    def match(self, features: Features) -> tuple[Tensor, Tensor]:
        p = self.params
        sims, shortlist = nearest(features.image.detach(), self.pool.features, k=p.shortlist)
        _, best = ot_rerank(features.image_tokens, sims, shortlist, self.pool, lam=p.lam, reg=p.reg,
                            max_iter=p.sinkhorn_iters, tol=p.sinkhorn_tol)
        return best, shortlist[:, 0]

    def extra_loss(self, batch: Batch, features: Features, state: TrainState,
                   matched: Tensor | None) -> dict[str, Tensor]:
        p = self.params
        n = min(len(batch.index), p.ot_batch or len(batch.index))
        ot = dict(reg=p.reg, max_iter=p.sinkhorn_iters, tol=p.sinkhorn_tol)
        scale = features.logit_scale
        if matched is None:
            words, word_mask = features.text_tokens[:n], features.text_mask[:n]
        else:
            words, word_mask = self.pool.tokens[matched[:n]], self.pool.mask[matched[:n]]
        inter = ot_infonce(features.image_tokens[:n], words, scale, y_mask=word_mask, **ot)
        raw = self.raw
        second = augment_batch(Batch(raw.index[:n], raw.caption_index[:n], raw.images[:n], raw.tokens[:n],
                                     raw.captions[:n]), state, p)
        view = state.model.encode(second.images, second.tokens, with_tokens=True)
        intra = (ot_infonce(features.image_tokens[:n], view.image_tokens, scale, **ot)
                 + ot_infonce(features.text_tokens[:n], view.text_tokens, scale, x_mask=features.text_mask[:n],
                              y_mask=view.text_mask, **ot)) / 2
        return {"ot_inter": p.alpha * inter, "ot_intra": p.beta * intra}


@benchbench.hookimpl
def benchbench_defenses() -> list[type]:
    return [OTCCLIP]
