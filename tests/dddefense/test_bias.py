"""reid-bias: per-identity accuracy spread on hand-made embeddings."""
from __future__ import annotations

import pytest
import torch

from benchbench.reid.api import Embeddings
from benchbench.reid.metrics import distance_matrix, rank_metrics
from benchbench_dddefense.bias import ReidBias, per_identity_accuracy

# gallery: identities 1 and 2, each on cameras 0 and 1, on a line
GALLERY = Embeddings(torch.tensor([[0.0], [0.1], [10.0], [10.1]]), torch.tensor([1, 1, 2, 2]),
                     torch.tensor([0, 1, 0, 1]))


def test_perfect_identity_and_confused_identity():
    """Identity 1's query sits on its gallery (AP 1); identity 2's sits on identity 1's
    (its only cross-camera match ranks 3rd: AP 1/3, Rank-1 0)."""
    query = Embeddings(torch.tensor([[0.05], [0.05]]), torch.tensor([1, 2]), torch.tensor([2, 0]))
    ap, rank1 = per_identity_accuracy(query, GALLERY)
    assert ap.tolist() == pytest.approx([1.0, 1 / 3]) and rank1.tolist() == [1.0, 0.0]
    out = ReidBias().evaluate(query, GALLERY)
    assert out["ap_per_id_var"] == pytest.approx(((1 - 2 / 3) ** 2 + (1 / 3 - 2 / 3) ** 2) / 2)
    assert out["rank1_per_id_var"] == pytest.approx(0.25)
    assert out["ap_worst10"] == pytest.approx(1 / 3)


def test_identities_served_equally_have_zero_variance_and_match_reid_rank():
    gen = torch.Generator().manual_seed(0)
    query = Embeddings(torch.tensor([[0.02], [10.02]]), torch.tensor([1, 2]), torch.tensor([0, 0]))
    out = ReidBias().evaluate(query, GALLERY)
    assert out["ap_per_id_var"] == 0 and out["rank1_per_id_var"] == 0
    # with one query per identity, the mean of per-identity AP is reid-rank's mAP
    feats = torch.randn(12, 4, generator=gen)
    q = Embeddings(feats[:6], torch.arange(6) % 3, torch.zeros(6, dtype=torch.long))
    g = Embeddings(feats[6:], torch.arange(6) % 3, torch.ones(6, dtype=torch.long))
    ap, _ = per_identity_accuracy(Embeddings(q.features[:3], q.pids[:3], q.camids[:3]), g)
    overall = rank_metrics(distance_matrix(q.features[:3], g.features), q.pids[:3], g.pids, q.camids[:3], g.camids)
    assert float(ap.mean()) == pytest.approx(overall["mAP"])


def test_identities_without_cross_camera_match_are_skipped():
    query = Embeddings(torch.tensor([[0.0], [5.0]]), torch.tensor([1, 7]), torch.tensor([2, 0]))
    ap, _ = per_identity_accuracy(query, GALLERY)
    assert len(ap) == 1
