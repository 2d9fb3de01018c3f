"""Targeted data poisoning (Carlini & Terzis, ICLR 2022), as RoCLIP's ``create_poison`` builds it.

Each of ``n_targets`` images of the evaluation *test* split gets an adversarial class
(drawn among the classes it does not belong to) and is added to the training set
``captions_per_target`` times, each time with a caption naming that class. The attack
succeeds on a target when the trained model's zero-shot top-1 prediction for it is its
adversarial class; ASR = successes / targets. ``TargetedAttack`` is that protocol with
the captions left to subclasses (the adaptive attacks of ``adaptive.py`` write their own).
"""
from __future__ import annotations

import json
from typing import Sequence

import datasets
import numpy as np
from PIL import Image
from pydantic import Field

from benchbench.api import Params
from benchbench.clip.api import ClipDataAttack, Poisoned, Probe
from benchbench.clip.data import CAPTION, IMAGE, LABEL, class_names, edit_pairs
from benchbench.clip.poisoning import CaptionSource, poison_captions


class TargetParams(Params):
    """The poison budget every targeted attack shares (so ASR compares column to column)."""

    n_targets: int = Field(16, ge=1, description="target test images (the papers use 16)")
    captions_per_target: int = Field(20, ge=1, description="poison pairs per target (papers: 30-100 in "
                                                           "millions of pairs)")


class TargetedAttack(ClipDataAttack):
    """Base of the targeted attacks: draws the targets and their adversarial classes and
    adds each target ``captions_per_target`` times; subclasses write the captions."""

    Params = TargetParams

    def poison(self, train: datasets.Dataset, test: datasets.Dataset, seed: int) -> Poisoned:
        rng = np.random.default_rng(seed)
        classes, labels = class_names(test), np.asarray(list(test[LABEL]))
        if self.params.n_targets > len(test):
            raise ValueError(f"n_targets={self.params.n_targets} exceeds the {len(test)} test images")
        targets = rng.choice(len(test), size=self.params.n_targets, replace=False)
        adversarial = [int(rng.choice([c for c in range(len(classes)) if c != labels[t]])) for t in targets]
        captions = list(train[CAPTION])
        added = [(test[int(t)][IMAGE], caption)
                 for t, adv in zip(targets, adversarial)
                 for caption in self.target_captions(captions, test[int(t)][IMAGE], classes, adv, rng)]
        spec = {**json.loads(self.params.model_dump_json()), "attack": self.name,
                "adversarial": [classes[a] for a in adversarial]}
        probe = Probe(tuple(int(t) for t in targets), tuple(adversarial), triggered=False, spec=spec)
        return Poisoned(edit_pairs(train, {}, added), probe)

    def target_captions(self, train_captions: list[str], image: Image.Image, classes: Sequence[str],
                        adversarial: int, rng: np.random.Generator) -> list[str]:
        """The ``captions_per_target`` captions the target ``image`` is added with."""
        raise NotImplementedError


class TargetedPoison(TargetedAttack):
    name = "targeted-poison"
    description = "test images added to training with captions naming an adversarial class (Carlini & Terzis)"

    class Params(TargetParams):
        captions: CaptionSource = Field("train", description="poison captions: training captions naming the "
                                                            "adversarial class ('train'), 'a photo of a {class}.' "
                                                            "('template') or one of CLIP's 80 ImageNet "
                                                            "templates ('imagenet-templates')")

    def target_captions(self, train_captions: list[str], image: Image.Image, classes: Sequence[str],
                        adversarial: int, rng: np.random.Generator) -> list[str]:
        return poison_captions(train_captions, classes, adversarial, self.params.captions_per_target,
                               self.params.captions, rng)
