"""mAP/CMC: identical to torchreid's evaluate_rank on random problems."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from benchbench.reid.metrics import evaluate_rank, rank_metrics

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchreid.reid.metrics import evaluate_rank as torchreid_evaluate_rank


def random_problem(rng: np.random.Generator, n_q: int, n_g: int, n_ids: int, n_cams: int, dtype=np.float64):
    """Identities 1..n_ids; the gallery also holds distractors (0) and junk (-1), and many
    same-identity same-camera entries that the protocol must drop."""
    q_pids = rng.integers(1, n_ids + 1, n_q)
    g_pids = rng.integers(-1, n_ids + 1, n_g)
    q_cams, g_cams = rng.integers(0, n_cams, n_q), rng.integers(0, n_cams, n_g)
    dist = rng.random((n_q, n_g)).astype(dtype)
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("trial", range(12))
def test_identical_to_torchreid(trial):
    rng = np.random.default_rng(trial)
    problem = random_problem(rng, int(rng.integers(5, 60)), int(rng.integers(80, 300)),
                             int(rng.integers(3, 25)), int(rng.integers(2, 7)),
                             dtype=np.float32 if trial % 2 else np.float64)
    cmc_ref, map_ref = torchreid_evaluate_rank(*problem, max_rank=50, use_cython=False)
    cmc, mean_ap = evaluate_rank(*problem, max_rank=50)
    assert abs(mean_ap - map_ref) < 1e-6
    np.testing.assert_allclose(cmc, cmc_ref, atol=1e-6)


def test_same_camera_matches_are_dropped_and_chunks_agree():
    # query 0 (id 1, cam 0): its nearest gallery entry is id 1 in cam 0 (dropped), then a
    # distractor, then id 1 in cam 1 -> first valid match at rank 2, AP 1/2.
    dist = np.array([[0.1, 0.2, 0.3, 0.9], [0.5, 0.4, 0.8, 0.1]])
    q_pids, q_cams = np.array([1, 2]), np.array([0, 0])
    g_pids, g_cams = np.array([1, 0, 1, 2]), np.array([0, 1, 1, 1])
    cmc, mean_ap = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=3)
    assert mean_ap == pytest.approx((0.5 + 1.0) / 2)
    np.testing.assert_allclose(cmc, [0.5, 1.0, 1.0])
    rng = np.random.default_rng(0)
    problem = random_problem(rng, 70, 200, 10, 4)
    assert evaluate_rank(*problem, chunk=7)[1] == pytest.approx(evaluate_rank(*problem)[1], abs=1e-12)


def test_rank_metrics_names_and_no_valid_query():
    rng = np.random.default_rng(1)
    out = rank_metrics(torch.from_numpy(rng.random((10, 40))), *random_problem(rng, 10, 40, 4, 3)[1:])
    assert set(out) == {"mAP", "rank1", "rank5", "rank10"}
    assert 0 <= out["mAP"] <= 1 and out["rank1"] <= out["rank5"] <= out["rank10"]
    with pytest.raises(ValueError, match="no query identity"):
        evaluate_rank(np.zeros((1, 2)), [1], [2, 3], [0], [1, 1])
