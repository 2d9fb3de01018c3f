"""The ``rematch`` evaluator: how well a re-matching defense broke up poisoned pairs.

Re-matching defenses (RoCLIP, OTCCLIP) save, next to their model, which caption row
each image row was trained with in every matching epoch (``rematch.safetensors``, see
``benchbench.clip.rematch.MatchLog``). This evaluator scores the last matching epoch
against the attack's ground-truth ``is_poison`` flags, judging a pairing by the
evaluation classes the captions name (``benchbench.clip.rematch.rematch_metrics``).
Defenses that do not re-match (and re-matching defenses in runs too short to reach a
matching epoch) report nothing.
"""
from __future__ import annotations

import torch

import benchbench
from benchbench.api import Metric
from benchbench.clip.api import ClipEvaluator, EvalInputs
from benchbench.clip.data import CAPTION, POISON
from benchbench.clip.rematch import load_matches, rematch_metrics

_RULES = (("", "the defense's rule"), ("_global", "the global nearest-neighbour rule on the same embeddings "
                                                   "(OTCCLIP logs it next to its OT choice)"))


class Rematch(ClipEvaluator):
    name = "rematch"
    description = "re-matching diagnostics: poisoned pairs broken up, clean pairs wrongly re-paired"
    metrics = tuple(m for suffix, rule in _RULES for m in (
        Metric(f"recall{suffix}", True, f"poisoned pairs whose caption changed meaning under {rule}"),
        Metric(f"precision{suffix}", True, f"poisoned pairs among pairs whose caption changed meaning under {rule}"),
        Metric(f"false_rematch_rate{suffix}", False, f"clean pairs re-paired with a caption naming other classes "
                                                     f"under {rule}"),
    ))

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        matches = None if inputs.model_dir is None else load_matches(inputs.model_dir)
        if matches is None or inputs.train is None:
            return {}
        poison = torch.tensor(inputs.train[POISON], dtype=torch.bool)
        return rematch_metrics(matches, poison, inputs.train[CAPTION], inputs.test.classes)


@benchbench.hookimpl
def benchbench_evaluators() -> list[type]:
    return [Rematch]
