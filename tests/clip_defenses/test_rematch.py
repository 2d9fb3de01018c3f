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


def test_mentioned_classes_matches_whole_words():
    from benchbench.clip.rematch import mentioned_classes

    classes = ("circle", "ring", "star")
    assert mentioned_classes("A red Circle next to a starfish", classes) == {"circle"}
    assert mentioned_classes("a ring and a star", classes) == {"ring", "star"}
    assert mentioned_classes("a blue square", classes) == frozenset()


def test_rematch_metrics_on_a_hand_made_assignment():
    from benchbench.clip.rematch import rematch_metrics

    classes = ("circle", "square", "star")
    captions = ["a circle", "a red circle", "a square", "a star",  # clean rows 0-3
                "a photo of a star", "a star"]  # rows 4-5: poisoned (an image of a circle, captioned 'star')
    is_poison = torch.tensor([0, 0, 0, 0, 1, 1], dtype=torch.bool)
    matches = {
        "epoch": torch.tensor([2] * 6 + [4] * 6),
        "image_row": torch.tensor([0, 1, 2, 3, 4, 5] * 2),
        # epoch 2 is ignored (only the last matching epoch counts)
        "caption_row": torch.tensor([2, 2, 2, 2, 4, 4] + [1, 2, 2, 3, 0, 5]),
        "caption_row_global": torch.tensor([0] * 6 + [1, 0, 3, 3, 3, 4]),
    }
    m = rematch_metrics(matches, is_poison, captions, classes)
    # epoch 4: clean 0 -> 'a red circle' (same class), 1 -> 'a square' (wrong), 2 ok, 3 ok
    assert m["false_rematch_rate"] == pytest.approx(1 / 4)
    # poisoned 4 -> 'a circle' (broken), 5 -> 'a star' (poison kept)
    assert m["recall"] == pytest.approx(1 / 2)
    assert m["precision"] == pytest.approx(1 / 2)  # re-matched: row 1 (clean) and row 4 (poisoned)
    # global choice: clean 0 ok, 1 ok, 2 -> star (wrong), 3 ok; poisoned 4 -> star (kept), 5 -> star (kept)
    assert m["false_rematch_rate_global"] == pytest.approx(1 / 4)
    assert m["recall_global"] == 0.0 and m["precision_global"] == 0.0


def test_rematch_metrics_without_poison_report_only_the_false_rate():
    from benchbench.clip.rematch import rematch_metrics

    matches = {"epoch": torch.tensor([1, 1]), "image_row": torch.tensor([0, 1]),
               "caption_row": torch.tensor([1, 0])}
    m = rematch_metrics(matches, torch.zeros(2, dtype=torch.bool), ["a circle", "a square"], ("circle", "square"))
    assert m == {"false_rematch_rate": 1.0}
