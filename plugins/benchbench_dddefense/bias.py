"""Evaluator ``reid-bias``: how unevenly a model serves the test identities.

DDDefense's motivating observation is that adversarial training raises the variance of
per-identity accuracy. Per test identity, the mean AP and the Rank-1 rate of its
queries are computed with the track's ranking (``benchbench.reid.metrics.evaluate_rank``
on that identity's queries, Market-1501 protocol, the same distance as ``reid-rank``);
the metrics are the variance of those numbers over identities (population variance,
accuracies as fractions) and the mean AP of the worst tenth of identities.
Identities whose queries have no cross-camera gallery match are skipped, as
``reid-rank`` skips such queries.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from benchbench.api import RATE, Metric, Params
from benchbench.reid.api import Embeddings, ReidEvaluator


class ReidBias(ReidEvaluator):
    name = "reid-bias"
    version = "1"
    description = "Per-identity accuracy spread: variance of per-identity AP and Rank-1, worst-decile AP"
    metrics = (
        # Diagnostic: lower is more even, not better; a model that fails every identity alike
        # scores near 0, so these rank nothing without the mAP beside them.
        Metric("ap_per_id_var", False, "variance over test identities of the mean AP of their queries; lower "
               "is more even, not better (a model that fails every identity alike is near 0): read it with "
               "reid-rank / mAP", role="diagnostic", low=0.0, high=0.25),  # the variance of values in [0, 1]
        Metric("rank1_per_id_var", False, "variance over test identities of their queries' Rank-1 rate; lower "
               "is more even, not better (read it with reid-rank / rank1)", role="diagnostic",
               low=0.0, high=0.25),
        Metric("ap_worst10", True, "mean per-identity AP of the worst 10% of identities", **RATE),
    )

    class Params(Params):
        distance: Literal["euclidean", "cosine"] = Field(
            "euclidean", description="distance between embeddings (as reid-rank's)")

    def evaluate(self, query: Embeddings, gallery: Embeddings) -> dict[str, float]:
        ap, rank1 = per_identity_accuracy(query, gallery, self.params.distance)
        worst = ap.sort().values[:max(1, math.ceil(0.1 * len(ap)))]
        return {"ap_per_id_var": float(ap.var(unbiased=False)),
                "rank1_per_id_var": float(rank1.var(unbiased=False)),
                "ap_worst10": float(worst.mean())}


def per_identity_accuracy(query: Embeddings, gallery: Embeddings, distance: str = "euclidean"):
    """``(ap, rank1)``: one entry per query identity with a cross-camera gallery match,
    the mean AP and the Rank-1 rate of that identity's (valid) queries."""
    import torch

    from benchbench.reid.metrics import distance_matrix, evaluate_rank

    dist = distance_matrix(query.features, gallery.features, distance)
    valid = ((query.pids[:, None] == gallery.pids[None, :])
             & (query.camids[:, None] != gallery.camids[None, :])).any(1)
    ap, rank1 = [], []
    for pid in query.pids[valid].unique():
        rows = valid & (query.pids == pid)
        cmc, mean_ap = evaluate_rank(dist[rows], query.pids[rows], gallery.pids, query.camids[rows],
                                     gallery.camids, max_rank=1)
        ap.append(mean_ap)
        rank1.append(float(cmc[0]))
    return torch.tensor(ap, dtype=torch.float64), torch.tensor(rank1, dtype=torch.float64)
