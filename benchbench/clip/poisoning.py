"""What CLIP data attacks share: captions that name a class, and backdoor scaffolding.

Poison captions come, by default, from the training set itself: captions that name the
adversarial class and no other class (as RoCLIP's ``create_poison`` picks real captions
containing the label), so poisons read like the rest of the data. ``captions: template``
uses "a photo of a {class}." instead; ``captions: imagenet-templates`` draws one of CLIP's
80 ImageNet prompt templates per poison, as CleanCLIP's ``backdoor/create_backdoor_data.py``
does (``templates[random.randint(0, len(templates) - 1)](label)``).

``BackdoorAttack`` holds everything the trigger attacks share: choose ``poison_rate`` of
the training pairs, add the trigger to their images, caption them with the target class,
and build the probe the ASR evaluator measures (every test image whose true class is not
the target, triggered). A backdoor plugin says how its trigger looks (``apply_trigger``);
a label-consistent one also which rows it may poison (``poison_rows``) and that they keep
their own captions (``captions_for``).
"""
from __future__ import annotations

import json
import re
from typing import Literal, Sequence

import datasets
import numpy as np
import torch
from pydantic import Field

from benchbench.api import Params
from benchbench.clip.api import ClipDataAttack, Poisoned, Probe
from benchbench.clip.data import CAPTION, LABEL, class_names, edit_pairs, to_pil, to_uint8
from benchbench.errors import ConfigError, DataError

TEMPLATE = "a photo of a {}."
CaptionSource = Literal["train", "template", "imagenet-templates"]


def rows_naming(captions: Sequence[str], classes: Sequence[str], target: int) -> np.ndarray:
    """Indices of the captions that contain the class name ``classes[target]`` as whole
    words and no other class name."""
    patterns = [re.compile(rf"\b{re.escape(c.lower())}s?\b") for c in classes]
    return np.array([row for row, cap in enumerate(captions)
                     if patterns[target].search(cap.lower())
                     and not any(p.search(cap.lower()) for i, p in enumerate(patterns) if i != target)], dtype=int)


def captions_naming(captions: Sequence[str], classes: Sequence[str], target: int) -> list[str]:
    """Captions that contain the class name ``classes[target]`` as whole words and no other
    class name."""
    return [captions[row] for row in rows_naming(captions, classes, target)]


def poison_captions(train_captions: Sequence[str], classes: Sequence[str], target: int, n: int,
                    source: CaptionSource, rng: np.random.Generator) -> list[str]:
    """``n`` captions naming ``classes[target]`` (drawn with replacement)."""
    if source == "template":
        return [TEMPLATE.format(classes[target])] * n
    if source == "imagenet-templates":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES as IMAGENET  # heavy: only when used

        return [IMAGENET[i](classes[target]) for i in rng.integers(len(IMAGENET), size=n)]
    pool = captions_naming(train_captions, classes, target)
    if not pool:
        raise DataError(f"no training caption names class '{classes[target]}' alone; set the attack param "
                        "captions: template")
    return [pool[i] for i in rng.integers(len(pool), size=n)]


def resolve_class(name: str | None, classes: Sequence[str], rng: np.random.Generator) -> int:
    """A class index from its name, or drawn with ``rng`` when ``name`` is None."""
    if name is None:
        return int(rng.integers(len(classes)))
    if name not in classes:
        raise ConfigError(f"unknown target class '{name}'; the evaluation set's classes are: {', '.join(classes)}")
    return classes.index(name)


class BackdoorAttack(ClipDataAttack):
    """Base of trigger attacks: subclasses implement ``apply_trigger`` (and extend Params)."""

    class Params(Params):
        target: str | None = Field(None, description="class the trigger should cause; None: drawn from the "
                                                     "evaluation classes with the cell's seed")
        poison_rate: float = Field(0.01, gt=0, le=1, description="fraction of training pairs poisoned")
        captions: CaptionSource = Field("train", description="poison captions: training captions naming the "
                                                            "target ('train'), 'a photo of a {target}.' "
                                                            "('template') or one of CLIP's 80 ImageNet "
                                                            "templates per poison ('imagenet-templates', "
                                                            "CleanCLIP)")

    def poison(self, train: datasets.Dataset, test: datasets.Dataset, seed: int) -> Poisoned:
        rng = np.random.default_rng(seed)
        classes = class_names(test)
        target = resolve_class(self.params.target, classes, rng)
        n = max(1, round(self.params.poison_rate * len(train)))
        train_captions = list(train[CAPTION])
        rows = self.poison_rows(train_captions, classes, target, n, rng)
        triggered = self.apply_trigger(to_uint8(train.select(rows)), torch.Generator().manual_seed(seed))
        captions = self.captions_for(train_captions, rows, classes, target, rng)
        poisoned = edit_pairs(train, dict(zip(rows.tolist(), zip(to_pil(triggered), captions))), [])
        others = np.flatnonzero(np.asarray(list(test[LABEL])) != target)
        spec = {**json.loads(self.params.model_dump_json()), "attack": self.name, "target": classes[target]}
        return Poisoned(poisoned, Probe(tuple(others.tolist()), (target,) * len(others), True, spec))

    def poison_rows(self, train_captions: list[str], classes: Sequence[str], target: int, n: int,
                    rng: np.random.Generator) -> np.ndarray:
        """The ``n`` training rows to poison, sorted: any ``n`` rows (dirty-label backdoors)."""
        return np.sort(rng.choice(len(train_captions), size=n, replace=False))

    def captions_for(self, train_captions: list[str], rows: np.ndarray, classes: Sequence[str], target: int,
                     rng: np.random.Generator) -> list[str]:
        """The captions the poisoned ``rows`` get: captions naming the target (``captions`` param)."""
        return poison_captions(train_captions, classes, target, len(rows), self.params.captions, rng)
