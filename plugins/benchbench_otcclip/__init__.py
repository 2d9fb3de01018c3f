"""OTCCLIP (Zhang, Gao, Bai et al., EMNLP 2025, arXiv 2509.18717), *our reading*.

The paper's body and code were not readable here; what is known: captions are
re-assigned by an optimal-transport distance between fine-grained visual features
(patch tokens) and textual features (word tokens), combined with global features, and
OT-based inter- and intra-modality alignment objectives are added to contrastive
learning. Our reading (ALGORITHMS.md), every choice a param:
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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
