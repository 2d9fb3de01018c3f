"""mAP and CMC with Market-1501's protocol, vectorised.

Same definition as torchreid's ``evaluate_rank`` (``eval_market1501``): for each query,
gallery entries with the query's identity *and* camera are removed; a query whose
identity is then absent from the gallery is skipped; AP averages the precision at every
true match; CMC@k is the fraction of queries with a true match in the top k. Junk
images (id -1) never reach this function: the data layer drops them on reading, as
torchreid's Market-1501 loader does, and any -1 left in ``g_pids`` is an ordinary
non-match, exactly as in torchreid.

torchreid sorts every gallery row and loops over queries in Python (its Cython path is
not on PyPI). Only the ranks of the true matches are needed, so here each row's true
matches are sorted (a few per query), every other gallery entry is located between them
with ``searchsorted``, and a per-row histogram gives how many non-matches precede each
match. That is O(G log R) per query instead of a full O(G log G) sort; see
``benchmarks/rank_bench.py``. Ties between a match and a non-match at exactly equal
distance count the non-match first (torchreid's order for ties is whatever its unstable
sort gives). Non-finite distances raise ``DivergedError``: sorted as they came, NaN
distances made a diverged model a perfect ranker.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from benchbench.errors import DivergedError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torchreid warns that its Cython ranker is missing
    from torchreid.reid.metrics.distance import compute_distance_matrix


def _as_tensor(x, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                  chunk: int = 512) -> tuple[np.ndarray, float]:
    """Return ``(cmc, mAP)`` like ``torchreid.reid.metrics.evaluate_rank`` (Market-1501 mode).

    ``distmat`` is (num_query, num_gallery), smaller = more similar; the other arguments
    are 1-D arrays or tensors. ``cmc[k]`` is Rank-(k+1). Queries are processed ``chunk``
    rows at a time to bound memory.
    """
    dist = _as_tensor(distmat)
    if not torch.is_floating_point(dist):
        dist = dist.double()
    q_pids, g_pids = _as_tensor(q_pids, torch.int64), _as_tensor(g_pids, torch.int64)
    q_cams, g_cams = _as_tensor(q_camids, torch.int64), _as_tensor(g_camids, torch.int64)
    if not bool(torch.isfinite(dist).all()):
        raise DivergedError(f"{int((~torch.isfinite(dist)).sum())} of {dist.numel()} query-gallery distances are "
                            "not finite (NaN or inf): the model or the attack diverged, so there is no ranking")
    num_q, num_g = dist.shape
    max_rank = min(max_rank, num_g)
    aps, first_hits = [], []
    for start in range(0, num_q, chunk):
        d = dist[start:start + chunk]
        same_id = q_pids[start:start + chunk, None] == g_pids[None, :]
        same_cam = q_cams[start:start + chunk, None] == g_cams[None, :]
        match = same_id & ~same_cam  # a true match: same identity, another camera
        negative = ~same_id  # a valid non-match (same-id same-camera entries are dropped)
        n_match = match.sum(1)
        keep = n_match > 0  # queries whose identity is in the gallery
        if not keep.any():
            continue
        d, match, negative, n_match = d[keep], match[keep], negative[keep], n_match[keep]
        r_max = int(n_match.max())
        inf = torch.tensor(float("inf"), dtype=d.dtype)
        # each row's match distances, ascending, padded with +inf
        match_d = torch.where(match, d, inf).topk(r_max, dim=1, largest=False, sorted=True).values
        # for every non-match: how many matches are strictly closer (0..r_max)
        slot = torch.searchsorted(match_d, d.contiguous(), right=False)
        slot.masked_fill_(~negative, r_max + 1)  # park matches and dropped entries in a spare bin
        rows = torch.arange(len(d))[:, None] * (r_max + 2)
        hist = torch.bincount((slot + rows).flatten(), minlength=len(d) * (r_max + 2)).view(len(d), -1)
        # non-matches ranked before the k-th match = those with at most k-1 matches closer
        before = hist[:, :r_max].cumsum(1)
        k = torch.arange(1, r_max + 1, dtype=torch.float64)
        rank = k + before.double()  # 1-based rank of the k-th match among kept entries
        valid = k[None, :] <= n_match[:, None]
        aps.append(torch.where(valid, k / rank, torch.zeros_like(rank)).sum(1) / n_match.double())
        first_hits.append(rank[:, 0])
    if not aps:
        raise ValueError("no query identity appears in the gallery (from another camera)")
    ap = torch.cat(aps)
    first = torch.cat(first_hits)
    cmc = (first[:, None] <= torch.arange(1, max_rank + 1, dtype=torch.float64)[None, :]).sum(0)
    return (cmc.double() / len(first)).numpy().astype(np.float32), float(ap.mean())


def rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids) -> dict[str, float]:
    """The track's headline numbers: mAP and Rank-1/5/10 (fractions in [0, 1])."""
    cmc, mean_ap = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=10)
    at = lambda k: float(cmc[min(k, len(cmc)) - 1])  # noqa: E731 - tiny galleries have < 10 entries
    return {"mAP": mean_ap, "rank1": at(1), "rank5": at(5), "rank10": at(10)}


def distance_matrix(query: torch.Tensor, gallery: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """torchreid's ``compute_distance_matrix`` (squared euclidean or 1 - cosine)."""
    return compute_distance_matrix(query, gallery, metric)
