"""The ``rematch`` evaluator: how well a re-matching defense broke up poisoned pairs.

Re-matching defenses (RoCLIP, OTCCLIP) save, next to their model, which caption row
each image row was trained with in every matching epoch (``rematch.safetensors``, see
``benchbench.clip.rematch.MatchLog``). This evaluator scores the last matching epoch
against the attack's ground-truth ``is_poison`` flags, judging a pairing by the
evaluation classes the captions name (``benchbench.clip.rematch.rematch_metrics``).
Defenses that do not re-match (and re-matching defenses in runs too short to reach a
matching epoch) report nothing. Two reference points stand beside the false rate:
``random_floor``, what pairing each clean image with a random training caption would
score (a matcher that learned nothing), and ``false_rematch_rate_plain``, what the global
nearest-neighbour rule scores with the plain (``none``) model of the same data and seed
(how well this world's CLIP can retrieve at all; docs/worlds.md, C5).
"""
from __future__ import annotations

from collections import Counter

import torch

import benchbench
from benchbench.api import RATE, Metric
from benchbench.clip.api import ClipEvaluator, EvalInputs
from benchbench.clip.data import CAPTION, POISON
from benchbench.clip.rematch import load_matches, mentioned_classes, rematch_metrics

_RULES = (("", "the defense's rule"), ("_global", "the global nearest-neighbour rule on the same embeddings "
                                                   "(OTCCLIP logs it next to its OT choice)"))


class Rematch(ClipEvaluator):
    name = "rematch"
    description = "re-matching diagnostics: poisoned pairs broken up, clean pairs wrongly re-paired"
    version = "3"  # 2: reports random_floor; 3: false_rematch_rate_plain
    metrics = (*(m for suffix, rule in _RULES for m in (
        Metric(f"recall{suffix}", True, f"poisoned pairs whose caption changed meaning under {rule}", **RATE),
        Metric(f"precision{suffix}", True, f"poisoned pairs among pairs whose caption changed meaning under {rule}",
               **RATE),
        Metric(f"false_rematch_rate{suffix}", False, f"clean pairs re-paired with a caption naming other classes "
                                                     f"under {rule}",
               references=("random_floor", "false_rematch_rate_plain"), **RATE),
    )), Metric("random_floor", False, "the false re-match rate of pairing each clean image with a uniformly random "
                                      "training caption: what a matcher that learned nothing scores", **RATE),
        Metric("false_rematch_rate_plain", False, "the false re-match rate of the global nearest-neighbour rule "
                                                  "(all training captions) with the plain model (defense none) "
                                                  "of the same data and seed", **RATE))

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        matches = None if inputs.model_dir is None else load_matches(inputs.model_dir)
        if matches is None or inputs.train is None:
            return {}
        poison = torch.tensor(inputs.train[POISON], dtype=torch.bool)
        captions = inputs.train[CAPTION]
        out = rematch_metrics(matches, poison, captions, inputs.test.classes)
        floor = random_floor(matches, poison, captions, inputs.test.classes)
        if floor is None:
            return out
        out["random_floor"] = floor
        if inputs.plain_model_fn is not None:
            out["false_rematch_rate_plain"] = plain_false_rate(inputs, matches, poison, captions)
        return out


def _scored_rows(matches: dict[str, torch.Tensor], is_poison: torch.Tensor, meaning: list[frozenset]) -> list[int]:
    """The clean image rows of the last matching epoch whose caption names a class: the
    population ``rematch_metrics`` scores its false rate on."""
    last = matches["epoch"] == matches["epoch"].max()
    return [i for i in matches["image_row"][last].tolist() if meaning[i] and not bool(is_poison[i])]


def plain_false_rate(inputs: EvalInputs, matches: dict[str, torch.Tensor], is_poison: torch.Tensor,
                     captions: list[str]) -> float:
    """Share of the scored rows whose nearest training caption under the plain model names
    other classes than their own caption."""
    from benchbench.clip.trainer import PairSet

    model = inputs.plain_model_fn()
    pairs = PairSet.from_dataset(inputs.train, model)
    meaning = [mentioned_classes(c, inputs.test.classes) for c in captions]
    return nearest_caption_false_rate(model.encode_images(pairs.images), model.encode_texts(pairs.tokens),
                                      _scored_rows(matches, is_poison, meaning), meaning)


def nearest_caption_false_rate(images: torch.Tensor, texts: torch.Tensor, rows: list[int],
                               meaning: list[frozenset]) -> float:
    """Share of ``rows`` whose nearest caption (cosine over all ``texts``) means something
    else than their own caption (``meaning``: the classes each caption names)."""
    nearest = (images[rows] @ texts.T).argmax(1).tolist()
    return sum(meaning[j] != meaning[i] for i, j in zip(rows, nearest)) / len(rows)


def random_floor(matches: dict[str, torch.Tensor], is_poison: torch.Tensor, captions: list[str],
                 classes: list[str]) -> float | None:
    """Expected false re-match rate if every clean image of the last matching epoch got a
    uniformly random training caption: 1 - P(that caption names the same classes as its
    own), averaged over the clean images whose caption names a class (the population
    ``rematch_metrics`` scores). ``None`` when there is no such image."""
    meaning = [mentioned_classes(c, classes) for c in captions]
    share = Counter(meaning)
    rows = _scored_rows(matches, is_poison, meaning)
    if not rows:
        return None
    return sum(1 - share[meaning[i]] / len(captions) for i in rows) / len(rows)


@benchbench.hookimpl
def benchbench_evaluators() -> list[type]:
    return [Rematch]
