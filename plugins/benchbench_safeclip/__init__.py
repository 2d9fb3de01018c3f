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

Diagnostics (not part of the method): ``safe_sets.safetensors`` next to the model holds
every filtered epoch's safe set, and ``safe_composition.json`` what each was made of by
the ground-truth poison flag (the trainer hands the flags to defenses for logs only; the
split never sees them). The ``safe-set`` evaluator summarises the final safe set for the
board: the share of clean and of poisoned pairs kept as safe and, when the pairs have a
``template`` column (which caption template wrote each caption), the largest gap in safe
share between caption templates: a filter on pair similarity can favour some caption
styles over others, whatever the poisoning.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import json
from collections.abc import Sequence

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from sklearn.mixture import GaussianMixture
from torch import Tensor

import benchbench
from benchbench.api import Metric
from benchbench.clip.api import ClipDefense, ClipEvaluator, EvalInputs
from benchbench.clip.data import POISON, TEMPLATE
from benchbench.clip.augment import NO_AUGMENTATION, AugmentParams, augment_batch
from benchbench.clip.inmodal import nn_inmodal_loss, one_way_infonce
from benchbench.clip.model import ClipModel, Features
from benchbench.clip.rematch import CPU_WARM_UP_EPOCHS, FeatureQueue
from benchbench.clip.trainer import Batch, PairSet, Phase, TrainConfig, TrainState

INMODAL, CLIP_WARMUP, FILTERED = "inmodal-warmup", "clip-warmup", "filtered"
SAFE_SETS_FILE = "safe_sets.safetensors"
COMPOSITION_FILE = "safe_composition.json"


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


def safe_set_composition(safe: Tensor, is_poison: Tensor, template: Sequence[int | None] | None = None,
                         min_group: int = 1) -> dict[str, float]:
    """What a safe set (bool per training row) is made of.

    ``safe_fraction``: safe rows / rows; ``safe_share_clean`` and (when there are
    poisoned rows) ``safe_share_poison``: the share of the clean / poisoned rows kept as
    safe. With ``template`` ids, ``safe_share_group_gap``: the largest minus the smallest
    safe share among the clean rows of each caption template with at least ``min_group``
    clean rows (rows without a template id, None or < 0, are left out; at least two
    templates are needed).
    """
    safe, poison = safe.bool(), is_poison.bool()
    if len(safe) != len(poison):
        raise ValueError(f"a safe set of {len(safe)} rows cannot describe {len(poison)} training pairs")
    out = {"safe_fraction": safe.float().mean().item()}
    if (~poison).any():
        out["safe_share_clean"] = safe[~poison].float().mean().item()
    if poison.any():
        out["safe_share_poison"] = safe[poison].float().mean().item()
    if template is not None:
        ids = torch.tensor([-1 if t is None else int(t) for t in template])
        shares = [safe[rows].float().mean().item() for t in ids.unique().tolist() if t >= 0
                  for rows in [(ids == t) & ~poison] if rows.sum() >= min_group]
        if len(shares) >= 2:
            out["safe_share_group_gap"] = max(shares) - min(shares)
    return out


def load_safe_sets(directory: Path) -> dict[str, Tensor] | None:
    """SafeCLIP's saved safe sets (``epoch`` (E,), ``safe`` (E, N) bool), or None."""
    path = Path(directory) / SAFE_SETS_FILE
    return load_file(str(path)) if path.is_file() else None


def cross_clip_loss(first: Features, second: Features) -> Tensor:
    """SafeCLIP's cross-augmented CLIP loss: image view 1 against caption view 2, and
    caption view 1 against image view 2."""
    scale = first.logit_scale
    return (one_way_infonce(first.image, second.text, scale) + one_way_infonce(first.text, second.image, scale)) / 2


def _rows(f: Features, keep: Tensor) -> Features:
    return Features(f.image[keep], f.text[keep], f.logit_scale)


class SafeCLIP(ClipDefense):
    name = "safeclip"
    version = "3"  # 2: the CPU warm-up re-chosen on world 2 (CPU_WARM_UP_EPOCHS); 3: identical views encoded once
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
        # CPU_WARM_UP's schedule: CPU_WARM_UP_EPOCHS plain CLIP epochs, then filtered ones; no augmentation.
        # The published warm-up (2 in-modal + 1 CLIP epoch at lr / 100) leaves the first split at chance.
        "default": {"inmodal_warmup": 0, "multimodal_warmup": CPU_WARM_UP_EPOCHS, "warmup_lr_factor": 1.0,
                    "ratio_step": 0.03,
                    **NO_AUGMENTATION},
        "paper": {},
    }

    def train(self, model: ClipModel, config: TrainConfig, data: PairSet, clean: PairSet | None = None,
              poison: Tensor | None = None) -> list[dict]:
        self.banks = (FeatureQueue(self.params.bank_size), FeatureQueue(self.params.bank_size))
        self.safe: Tensor | None = None
        self.safe_sets: dict[int, Tensor] = {}  # epoch -> safe rows, saved for inspection
        self.first_ratio = 0.0
        self.poison = torch.zeros(len(data), dtype=torch.bool) if poison is None else poison  # diagnostics only
        return super().train(model, config, data, clean=clean, poison=poison)

    def state_dict(self) -> dict:
        """The nearest-neighbour banks and the split: this epoch's safe set, the earlier
        ones and the first split's safe fraction (the ratio schedule grows from it)."""
        return {"banks": [bank.state_dict() for bank in self.banks], "safe": self.safe,
                "safe_sets": self.safe_sets, "first_ratio": self.first_ratio}

    def load_state_dict(self, state: dict) -> None:
        for bank, saved in zip(self.banks, state["banks"]):
            bank.load_state_dict(saved)
        self.safe, self.safe_sets, self.first_ratio = state["safe"], state["safe_sets"], state["first_ratio"]

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
        """The first view; the second is kept for ``loss``. Identical views (the default
        preset) are the batch itself: ``loss`` reuses the first view's features for the
        second, the same loss as encoding the batch twice for half the encoder passes."""
        self.second_view = None if self.params.identity_views else augment_batch(batch, state, self.params)
        return augment_batch(batch, state, self.params)

    def loss(self, batch: Batch, features: Features, state: TrainState) -> dict[str, Tensor]:
        view = self.second_view
        second = features if view is None else state.model.encode(view.images, view.tokens)
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
        rows were safe; ``safe_composition.json``: each epoch's ``safe_set_composition``
        by poison flag (the ``safe-set`` evaluator adds the by-template part)."""
        if not self.safe_sets:
            return
        save_file({"epoch": torch.tensor(list(self.safe_sets)),
                   "safe": torch.stack(list(self.safe_sets.values()))}, str(directory / SAFE_SETS_FILE))
        epochs = [{"epoch": epoch, **safe_set_composition(safe, self.poison)}
                  for epoch, safe in self.safe_sets.items()]
        (directory / COMPOSITION_FILE).write_text(json.dumps({"epochs": epochs}, indent=1))

    def _unimodal(self, first: Features, second: Features) -> Tensor:
        return nn_inmodal_loss(first.image, second.image, first.text, second.text, first.logit_scale, *self.banks)


class SafeSet(ClipEvaluator):
    """The final safe set of a SafeCLIP model (``safe_set_composition`` of its last
    filtered epoch). Other defenses, and runs too short to filter, report nothing."""

    name = "safe-set"
    description = ("SafeCLIP diagnostics: clean and poisoned pairs kept as safe, and the safe share's gap "
                   "between caption templates")
    metrics = (
        Metric("safe_fraction", True, "training pairs in the final safe set"),
        Metric("safe_share_clean", True, "clean pairs kept in the final safe set"),
        Metric("safe_share_poison", False, "poisoned pairs kept in the final safe set"),
        Metric("safe_share_group_gap", False, "largest gap in the clean pairs' safe share between caption templates "
                                              "(needs a template column)"),
    )

    class Params(ClipEvaluator.Params):
        min_group: int = Field(10, ge=1, description="caption templates with fewer clean pairs are left out of the "
                                                     "gap (their share is noise)")

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        sets = None if inputs.model_dir is None else load_safe_sets(inputs.model_dir)
        if sets is None or inputs.train is None:
            return {}
        train = inputs.train
        template = train[TEMPLATE] if TEMPLATE in train.column_names else None
        return safe_set_composition(sets["safe"][int(sets["epoch"].argmax())],
                                    torch.tensor(train[POISON], dtype=torch.bool), template, self.params.min_group)


@benchbench.hookimpl
def benchbench_defenses() -> list[type]:
    return [SafeCLIP]


@benchbench.hookimpl
def benchbench_evaluators() -> list[type]:
    return [SafeSet]
