"""Zero-shot classification, linear probes and the inputs CLIP evaluators share.

Zero-shot follows CLIP: each class is the re-normalised mean of its normalised prompt
embeddings ("a photo of a {}." ...), and an image is assigned the class with the highest
cosine similarity. The linear probe follows OpenAI's protocol: scikit-learn
``LogisticRegression`` (L-BFGS, L2) on frozen image features, its inverse regularisation
``C`` chosen on a stratified validation split of the probe's training images, then refit
on all of them.

``EvalInputs`` is what every ``ClipEvaluator`` receives. It caches the class embeddings
and test-set features per model, so a cell with several evaluators encodes once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from benchbench.clip.data import Labelled
from benchbench.clip.model import ClipModel
from benchbench.errors import DataError
from benchbench.numerics import require_finite

if TYPE_CHECKING:
    import datasets

    from benchbench.clip.api import ClipDataAttack, Probe

PROBE_CS = (0.01, 0.1, 1.0, 10.0, 100.0)


def zero_shot_classifier(model: ClipModel, classes: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(C, D) class embeddings: mean of the normalised prompt embeddings, re-normalised."""
    prompts = [t.format(c) for c in classes for t in templates]
    emb = model.encode_texts(prompts).view(len(classes), len(templates), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose true label is among the ``k`` highest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels.view(-1, 1)).any(dim=1).float().mean().item()


def chance(labels: torch.Tensor) -> float:
    """Top-1 of a classifier that always names the most frequent class: the accuracy
    floor a top-1 is read against (1 / classes on a balanced split)."""
    return labels.bincount().max().item() / len(labels)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 cs: Sequence[float] = PROBE_CS, val_fraction: float = 0.25, seed: int = 0,
                 max_iter: int = 1000) -> tuple[float, float]:
    """Top-1 test accuracy of a logistic-regression probe and the ``C`` it chose."""
    n_classes = len(np.unique(train_y))
    n_val = max(round(val_fraction * len(train_y)), n_classes)  # every class in the validation split
    if len(train_y) - n_val < n_classes:
        raise DataError(f"{len(train_y)} linear-probe training images are too few for {n_classes} classes; "
                        "add images to the evaluation set's train split")
    fit_x, val_x, fit_y, val_y = train_test_split(train_x, train_y, test_size=n_val, random_state=seed,
                                                  stratify=train_y)

    def probe(c: float, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=max_iter).fit(x, y)

    best = max(cs, key=lambda c: probe(c, fit_x, fit_y).score(val_x, val_y))  # first best on ties
    return float(probe(best, train_x, train_y).score(test_x, test_y)), float(best)


def _finite(features: torch.Tensor, what: str) -> torch.Tensor:
    """``features``, refused if not finite: a NaN model must fail its cell, not score."""
    require_finite(features, what)
    return features


@dataclass
class EvalInputs:
    """Everything a CLIP evaluator may need for one cell."""

    model: ClipModel
    test: Labelled
    templates: tuple[str, ...]
    attack: "ClipDataAttack"
    probe: "Probe | None"
    seed: int
    probe_train: Labelled | None = None  # the eval set's train split, for linear probes
    clean_model_fn: Callable[[], ClipModel] | None = None  # same defense, trained without poison
    plain_model_fn: Callable[[], ClipModel] | None = None  # no defense (``none``), same data and seed
    model_dir: Path | None = None  # the trained model's stage folder (defense artifacts)
    train: "datasets.Dataset | None" = None  # the (poisoned) training pairs, with ``is_poison``
    _cache: dict = field(default_factory=dict, repr=False)

    def _cached(self, key: tuple, make: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def classifier(self, model: ClipModel | None = None) -> torch.Tensor:
        model = model or self.model
        return self._cached(("classifier", id(model)), lambda: _finite(
            zero_shot_classifier(model, self.test.classes, self.templates), "zero-shot class embeddings"))

    def features(self, split: Labelled, model: ClipModel | None = None) -> torch.Tensor:
        model = model or self.model
        return self._cached(("features", id(split), id(model)),
                            lambda: _finite(model.encode_images(split.images), "image features"))

    def zero_shot_logits(self, images: torch.Tensor, model: ClipModel | None = None) -> torch.Tensor:
        model = model or self.model
        return _finite(model.encode_images(images), "image features") @ self.classifier(model).T

    def clean_model(self) -> ClipModel | None:
        """The reference model (built or loaded on first use), or None for a clean cell."""
        if self.clean_model_fn is None:
            return None
        return self._cached(("clean_model",), self.clean_model_fn)
