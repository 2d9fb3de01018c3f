"""In-modal contrastive losses shared by CleanCLIP and SafeCLIP.

Both contrast an embedding with another view of the same image (or caption) against
the other items of the batch, in one direction per modality, as their code does:

- CleanCLIP (``src/train.py``): ``CE(tau Z_I Z~_I^T)`` and ``CE(tau Z_T Z~_T^T)``, each
  embedding against its augmented view, averaged over the two modalities;
- SafeCLIP (NNCLR-style, lightly's nearest-neighbour memory bank): the first view is
  replaced by its nearest neighbour in a FIFO bank of earlier first views (the bank as it
  was before this batch), and the second view is contrasted against those neighbours.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from benchbench.clip.rematch import FeatureQueue, nearest


def one_way_infonce(queries: Tensor, keys: Tensor, logit_scale: Tensor) -> Tensor:
    """``CE(logit_scale * queries @ keys^T)`` with row i's positive at column i."""
    logits = logit_scale * queries @ keys.T
    return F.cross_entropy(logits, torch.arange(len(queries), device=logits.device))


def inmodal_loss(image: Tensor, image_view: Tensor, text: Tensor, text_view: Tensor,
                 logit_scale: Tensor) -> Tensor:
    """CleanCLIP's L_inmodal = 1/2 [CE(tau Z_I Z~_I^T) + CE(tau Z_T Z~_T^T)] on normalised embeddings."""
    return (one_way_infonce(image, image_view, logit_scale) + one_way_infonce(text, text_view, logit_scale)) / 2


def swap_with_neighbours(features: Tensor, bank: FeatureQueue) -> Tensor:
    """Each (normalised) feature's nearest neighbour in ``bank`` (detached), then push the
    features into the bank. An empty bank returns the features themselves, detached."""
    if len(bank):
        _, index = nearest(features.detach(), bank.features, k=1)
        neighbours = bank.features[index[:, 0]]
    else:
        neighbours = features.detach()
    bank.push(features, torch.zeros(len(features), dtype=torch.long))
    return neighbours


def nn_inmodal_loss(image: Tensor, image_view: Tensor, text: Tensor, text_view: Tensor,
                    logit_scale: Tensor, image_bank: FeatureQueue, text_bank: FeatureQueue) -> Tensor:
    """SafeCLIP's unimodal loss: the second view of each image (caption) against the
    nearest neighbours of the first views, one bank per modality."""
    image_nn = swap_with_neighbours(image, image_bank)
    text_nn = swap_with_neighbours(text, text_bank)
    return (one_way_infonce(image_view, image_nn, logit_scale)
            + one_way_infonce(text_view, text_nn, logit_scale)) / 2
