"""SafeCLIP (Yang et al., ICML 2024): train CLIP only on pairs it believes are safe.

As in BigML-CS-UCLA/SafeCLIP (``src/main.py``, ``src/samplers.py``):

1. ``inmodal_warmup`` epochs of unimodal contrastive learning (NNCLR-style, a
   nearest-neighbour memory bank per modality) on all pairs: image and caption encoders
   learn their own modality without ever seeing the (possibly poisoned) pairing;
2. ``multimodal_warmup`` epoch(s) of the CLIP loss on all pairs at a very low learning
   rate (``warmup_lr_factor`` x lr): just enough to align the towers;
3. then every epoch: the cosine similarity of every (un-augmented) pair, a 2-component Gaussian mixture
   on them (``GaussianMixture(2, random_state=0)``, the clean component is the one with
   the larger mean), and a split: the first filtering epoch keeps the pairs whose clean
   probability is >= ``threshold`` (0.9) as *safe*; each later epoch keeps the top
   ``ratio`` of pairs by clean probability, ``ratio`` starting at the first epoch's safe
   fraction and growing by ``ratio_step`` (0.01) per epoch up to ``ratio_cap`` (0.85).
   Risky pairs get the unimodal loss, safe pairs the CLIP loss on augmented views
   ("cross-augmented": image view 1 with caption view 2 and caption view 1 with image
   view 2).

Departures, for the shared trainer: the reference runs a pass over the risky set and
then one over the safe set each epoch; here both kinds of pair share each batch, the
CLIP loss on the batch's safe pairs and the unimodal loss on its risky ones, each
weighted by its share of the batch (the same per-pair weight as separate passes). The
reference's warm-up lr follows a cosine from the lr down to ``filter_lr`` (5e-6 = lr /
100) over the warm-up epochs; here the CLIP warm-up epoch runs at ``warmup_lr_factor``
x lr. The main phase gets the epochs the protocol budget leaves after the warm-ups (at
least one).
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import save_file
from sklearn.mixture import GaussianMixture
from torch import Tensor

import benchbench
from benchbench.clip.api import ClipDefense
from benchbench.clip.augment import NO_AUGMENTATION, AugmentParams, augment_batch
from benchbench.clip.inmodal import nn_inmodal_loss, one_way_infonce
from benchbench.clip.model import ClipModel, Features
from benchbench.clip.rematch import FeatureQueue
from benchbench.clip.trainer import Batch, PairSet, Phase, TrainConfig, TrainState

INMODAL, CLIP_WARMUP, FILTERED = "inmodal-warmup", "clip-warmup", "filtered"
SAFE_SETS_FILE = "safe_sets.safetensors"


def clean_probability(similarities: np.ndarray) -> np.ndarray:
    """P(clean) of each pair: the posterior of the larger-mean component of a 2-component
    Gaussian mixture fitted to the pairs' cosine similarities."""
    sims = np.asarray(similarities, dtype=np.float64).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, random_state=0).fit(sims)
    return gmm.predict_proba(sims)[:, int(np.argmax(gmm.means_))]


def safe_ratio(first_ratio: float, epochs_since_first: int, step: float, cap: float) -> float:
    """The fraction of pairs kept as safe ``epochs_since_first`` filtering epochs after the
    first one (which used ``first_ratio``, the share above the probability threshold)."""
    if epochs_since_first == 0:
        return first_ratio
    return min(first_ratio + step * epochs_since_first, cap)


def split_safe(similarities: np.ndarray, probabilities: np.ndarray, ratio: float | None,
               threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(safe rows, risky rows). ``ratio=None``: safe = probability >= ``threshold``;
    otherwise the top ``ratio`` of rows by clean probability (ties by similarity)."""
    order = np.lexsort((-np.asarray(similarities), -np.asarray(probabilities)))
    if ratio is None:
        n_safe = int((probabilities >= threshold).sum())
    else:
        n_safe = int(ratio * len(order))
    return np.sort(order[:n_safe]), np.sort(order[n_safe:])


def cross_clip_loss(first: Features, second: Features) -> Tensor:
    """SafeCLIP's cross-augmented CLIP loss: image view 1 against caption view 2, and
    caption view 1 against image view 2."""
    scale = first.logit_scale
    return (one_way_infonce(first.image, second.text, scale) + one_way_infonce(first.text, second.image, scale)) / 2


def _rows(f: Features, keep: Tensor) -> Features:
    return Features(f.image[keep], f.text[keep], f.logit_scale)


class SafeCLIP(ClipDefense):
    name = "safeclip"
    version = "1"
    description = "SafeCLIP: unimodal warm-up, then CLIP only on pairs a GMM on pair similarity deems safe"

    class Params(AugmentParams):
        inmodal_warmup: int = Field(5, ge=0, description="epochs of unimodal (NNCLR-style) warm-up")
        multimodal_warmup: int = Field(1, ge=0, description="epochs of CLIP on all pairs at a low lr")
        warmup_lr_factor: float = Field(0.01, gt=0, description="lr of the CLIP warm-up, as a fraction of the lr")
        bank_size: int = Field(256, ge=1, description="nearest-neighbour memory bank size per modality")
        threshold: float = Field(0.9, gt=0, lt=1, description="clean probability that makes a pair safe in the "
                                                              "first filtered epoch")
        ratio_step: float = Field(0.01, ge=0, description="growth of the safe fraction per filtered epoch")
        ratio_cap: float = Field(0.85, gt=0, le=1, description="largest safe fraction")

    presets: ClassVar = {
        "smoke": {"inmodal_warmup": 1, "multimodal_warmup": 1, "augment_group": 16, "bank_size": 64},
        # CPU_WARM_UP's schedule: 5 plain CLIP epochs, then 5 filtered; no augmentation (NO_AUGMENTATION).
        # The published warm-up (2 in-modal + 1 CLIP epoch at lr / 100) leaves the first split at chance.
        "default": {"inmodal_warmup": 0, "multimodal_warmup": 5, "warmup_lr_factor": 1.0, "ratio_step": 0.03,
                    **NO_AUGMENTATION},
        "paper": {},
    }

    def train(self, model: ClipModel, config: TrainConfig, data: PairSet, clean: PairSet | None = None,
              poison: Tensor | None = None) -> list[dict]:
        self.banks = (FeatureQueue(self.params.bank_size), FeatureQueue(self.params.bank_size))
        self.safe: Tensor | None = None
        self.safe_sets: dict[int, Tensor] = {}  # epoch -> safe rows, saved for inspection
        self.first_ratio = 0.0
        return super().train(model, config, data, clean=clean, poison=poison)

    def phases(self, config: TrainConfig) -> list[Phase]:
        p = self.params
        main = max(1, config.epochs - p.inmodal_warmup - p.multimodal_warmup)
        plan = [Phase(INMODAL, p.inmodal_warmup), Phase(CLIP_WARMUP, p.multimodal_warmup,
                                                         lr=config.lr * p.warmup_lr_factor), Phase(FILTERED, main)]
        return [phase for phase in plan if phase.epochs > 0]

    def on_epoch_start(self, state: TrainState) -> None:
        if state.phase.name != FILTERED:
            return None
        f = state.embed_all()
        sims = (f.image * f.text).sum(dim=1).numpy()
        probs = clean_probability(sims)
        p = self.params
        ratio = None if state.epoch == 0 else safe_ratio(self.first_ratio, state.epoch, p.ratio_step, p.ratio_cap)
        safe, _ = split_safe(sims, probs, ratio, p.threshold)
        if state.epoch == 0:
            self.first_ratio = len(safe) / len(sims)
        self.safe = torch.zeros(len(sims), dtype=torch.bool)
        self.safe[torch.from_numpy(safe)] = True
        self.safe_sets[state.global_epoch] = self.safe
        return None

    def augment(self, batch: Batch, state: TrainState) -> Batch:
        self.second_view = augment_batch(batch, state, self.params)
        return augment_batch(batch, state, self.params)

    def loss(self, batch: Batch, features: Features, state: TrainState) -> dict[str, Tensor]:
        second = state.model.encode(self.second_view.images, self.second_view.tokens)
        if state.phase.name == INMODAL:
            return {"unimodal": self._unimodal(features, second)}
        if state.phase.name == CLIP_WARMUP:
            return {"clip": cross_clip_loss(features, second)}
        safe = self.safe[batch.index]
        terms = {}
        if safe.any():
            terms["clip"] = safe.float().mean() * cross_clip_loss(_rows(features, safe), _rows(second, safe))
        if not safe.all():
            risky = ~safe
            terms["unimodal"] = risky.float().mean() * self._unimodal(_rows(features, risky), _rows(second, risky))
        return terms

    def save_artifacts(self, directory: Path) -> None:
        """``safe_sets.safetensors``: the filtered epochs and, per epoch, which training
        rows were safe (compare with the data's ``is_poison`` to see what the GMM kept)."""
        if self.safe_sets:
            save_file({"epoch": torch.tensor(list(self.safe_sets)),
                       "safe": torch.stack(list(self.safe_sets.values()))}, str(directory / SAFE_SETS_FILE))

    def _unimodal(self, first: Features, second: Features) -> Tensor:
        return nn_inmodal_loss(first.image, second.image, first.text, second.text, first.logit_scale, *self.banks)


@benchbench.hookimpl
def benchbench_defenses() -> list[type]:
    return [SafeCLIP]
