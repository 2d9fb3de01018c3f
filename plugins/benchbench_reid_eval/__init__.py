"""ReID evaluators: mAP and CMC Rank-1/5/10 with Market-1501's protocol, and the
training cost of the cell's model (``benchbench.cost``).

The task hands it the embeddings of the cell's queries (clean for attack ``none``,
attacked otherwise) and of the clean gallery; ranking is ``benchbench.reid.metrics``
(identical to torchreid's ``evaluate_rank``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

import benchbench
from benchbench.api import RATE, Metric, Params
from benchbench.cost import COST_METRICS, training_cost
from benchbench.reid.api import Embeddings, ReidEvaluator

__version__ = "1.0"


class ReidRank(ReidEvaluator):
    name = "reid-rank"
    description = "mAP and CMC Rank-1/5/10 (Market-1501 protocol: same-id same-camera gallery entries dropped)"
    metrics = (
        Metric("mAP", True, "mean average precision over queries with a cross-camera match", role="utility",
               **RATE),
        Metric("rank1", True, "fraction of queries whose nearest gallery entry is a true match", role="utility",
               **RATE),
        Metric("rank5", True, "fraction of queries with a true match in the top 5", role="utility", **RATE),
        Metric("rank10", True, "fraction of queries with a true match in the top 10", role="utility", **RATE),
    )

    class Params(Params):
        distance: Literal["euclidean", "cosine"] = Field(
            "euclidean", description="distance between embeddings (torchreid's compute_distance_matrix)")

    def evaluate(self, query: Embeddings, gallery: Embeddings) -> dict[str, float]:
        from benchbench.reid.metrics import distance_matrix, rank_metrics

        dist = distance_matrix(query.features, gallery.features, self.params.distance)
        return rank_metrics(dist, query.pids, gallery.pids, query.camids, gallery.camids)


class ReidCost(ReidEvaluator):
    name = "cost"
    description = "training cost of the cell's model: train and build seconds, optimiser steps"
    metrics = tuple(m for m in COST_METRICS if m.name != "match_seconds")  # no ReID defense re-matches

    def evaluate(self, query: Embeddings, gallery: Embeddings) -> dict[str, float]:
        return {}  # the cost is the training's, not the embeddings': see evaluate_model

    def evaluate_model(self, query: Embeddings, gallery: Embeddings, model_dir: Path) -> dict[str, float]:
        return training_cost(model_dir)


@benchbench.hookimpl
def benchbench_evaluators():
    return [ReidRank, ReidCost]
