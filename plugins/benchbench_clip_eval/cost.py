"""Training cost of the cell's model: wall seconds, optimiser steps, re-matching seconds
(read from the model stage's files by ``benchbench.cost``)."""
from __future__ import annotations

from benchbench.clip.api import ClipEvaluator, EvalInputs
from benchbench.cost import COST_METRICS, training_cost


class ClipCost(ClipEvaluator):
    name = "cost"
    description = "training cost of the cell's model: train and build seconds, optimiser steps, matching seconds"
    metrics = COST_METRICS

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        return {} if inputs.model_dir is None else training_cost(inputs.model_dir)
