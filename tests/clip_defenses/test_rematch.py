"""The caption pool, nearest-neighbour matching, OT re-ranking and the match record."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchbench.clip.rematch import FeatureQueue, MatchLog, load_matches, nearest, ot_rerank


def _basis(*idx: int, dim: int = 4) -> torch.Tensor:
    return F.one_hot(torch.tensor(idx), dim).float()


def test_pool_is_first_in_first_out():
    pool = FeatureQueue(capacity=3)
    pool.push(_basis(0, 1), torch.tensor([10, 11]))
    assert len(pool) == 2 and sorted(pool.rows.tolist()) == [10, 11]
    pool.push(_basis(2, 3), torch.tensor([12, 13]))  # overwrites the oldest (row 10)
    assert len(pool) == 3 and sorted(pool.rows.tolist()) == [11, 12, 13]
    pool.push(_basis(0), torch.tensor([14]))  # next oldest is row 11
    assert sorted(pool.rows.tolist()) == [12, 13, 14]
    # features stay attached to their rows
    for feature, row in zip(pool.features, pool.rows):
        assert feature.argmax().item() == {12: 2, 13: 3, 14: 0}[row.item()]


def test_a_batch_larger_than_the_pool_keeps_its_last_entries():
    pool = FeatureQueue(capacity=2)
    pool.push(_basis(0, 1, 2), torch.tensor([0, 1, 2]))
    assert sorted(pool.rows.tolist()) == [1, 2]


def test_pool_entries_are_detached():
    pool = FeatureQueue(capacity=4)
    x = torch.randn(2, 4, requires_grad=True)
    pool.push(x * 2, torch.tensor([0, 1]))
    assert not pool.features.requires_grad


def test_nearest_is_argmax_cosine():
    keys = torch.tensor([[1.0, 0.0], [0.0, 5.0], [1.0, 1.0]])  # norms differ: cosine, not dot
    queries = torch.tensor([[0.1, 1.0], [1.0, 0.05], [3.0, 2.9]])
    sims, index = nearest(queries, keys, k=1)
    assert index[:, 0].tolist() == [1, 0, 2]
    assert torch.allclose(sims[:, 0], F.cosine_similarity(queries, keys[index[:, 0]]))


def test_ot_rerank_prefers_the_right_binding_when_global_similarity_ties():
    """Image tokens: a 'red' patch at a 'circle' location and a 'blue' patch at a 'square'
    location, encoded as red+circle and blue+square. Two captions hold the same four words
    (so their pooled embeddings are equal: a global tie) but bind them differently."""
    red, blue, circle, square = torch.eye(4)
    image = torch.stack([red + circle, blue + square]).unsqueeze(0)  # (1, P=2, 4)
    right = torch.stack([red + circle, blue + square])  # "a red circle and a blue square"
    wrong = torch.stack([red + square, blue + circle])  # "a red square and a blue circle"
    pool = FeatureQueue(capacity=4)
    glob = torch.ones(2, 4)  # identical global embeddings
    pool.push(glob, torch.tensor([7, 8]), tokens=torch.stack([wrong, right]))
    sims, shortlist = nearest(glob[:1], pool.features, k=2)
    assert torch.allclose(sims[0, 0], sims[0, 1])  # the global rule cannot choose
    scores, best = ot_rerank(image, sims, shortlist, pool, lam=1.0, reg=0.05)
    assert pool.rows[best].item() == 8
    assert scores.max() > scores.min()


def test_ot_rerank_ignores_padding_tokens():
    a, b = torch.eye(2)
    image = torch.stack([a, a]).unsqueeze(0)
    pool = FeatureQueue(capacity=2)
    # caption 0: word 'a' plus a padding slot that holds 'b' (must be ignored); caption 1: 'a', 'b'
    tokens = torch.stack([torch.stack([a, b]), torch.stack([a, b])])
    mask = torch.tensor([[True, False], [True, True]])
    pool.push(torch.ones(2, 2), torch.tensor([0, 1]), tokens=tokens, mask=mask)
    sims, shortlist = nearest(torch.ones(1, 2), pool.features, k=2)
    _, best = ot_rerank(image, sims, shortlist, pool, lam=1.0, reg=0.05)
    assert pool.rows[best].item() == 0  # all of caption 0's real mass sits on 'a'


def test_match_log_round_trip(tmp_path):
    log = MatchLog()
    log.add(2, torch.tensor([0, 1]), torch.tensor([5, 6]), torch.tensor([5, 7]))
    log.add(4, torch.tensor([1, 0]), torch.tensor([6, 5]), torch.tensor([6, 6]))
    log.save(tmp_path)
    saved = load_matches(tmp_path)
    assert saved["epoch"].tolist() == [2, 2, 4, 4]
    assert saved["caption_row"].tolist() == [5, 6, 6, 5]
    assert saved["caption_row_global"].tolist() == [5, 7, 6, 6]
    assert load_matches(tmp_path / "missing") is None


def test_match_log_rejects_a_partial_global_record():
    log = MatchLog()
    log.add(2, torch.tensor([0]), torch.tensor([5]), torch.tensor([5]))
    log.add(2, torch.tensor([1]), torch.tensor([6]))
    with pytest.raises(ValueError):
        log.tensors()
