"""ReID retrieval evaluator: mAP and CMC Rank-1/5/10 with Market-1501's protocol.

The task hands it the embeddings of the cell's queries (clean for attack ``none``,
attacked otherwise) and of the clean gallery; ranking is ``benchbench.reid.metrics``
(identical to torchreid's ``evaluate_rank``).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

import benchbench
from benchbench.api import Metric, Params
from benchbench.reid.api import Embeddings, ReidEvaluator

__version__ = "1.0"


class ReidRank(ReidEvaluator):
    name = "reid-rank"
    description = "mAP and CMC Rank-1/5/10 (Market-1501 protocol: same-id same-camera gallery entries dropped)"
    metrics = (
        Metric("mAP", True, "mean average precision over queries with a cross-camera match", role="utility"),
        Metric("rank1", True, "fraction of queries whose nearest gallery entry is a true match", role="utility"),
        Metric("rank5", True, "fraction of queries with a true match in the top 5", role="utility"),
        Metric("rank10", True, "fraction of queries with a true match in the top 10", role="utility"),
    )

    class Params(Params):
        distance: Literal["euclidean", "cosine"] = Field(
            "euclidean", description="distance between embeddings (torchreid's compute_distance_matrix)")

    def evaluate(self, query: Embeddings, gallery: Embeddings) -> dict[str, float]:
        from benchbench.reid.metrics import distance_matrix, rank_metrics

        dist = distance_matrix(query.features, gallery.features, self.params.distance)
        return rank_metrics(dist, query.pids, gallery.pids, query.camids, gallery.camids)


@benchbench.hookimpl
def benchbench_evaluators():
    return [ReidRank]
