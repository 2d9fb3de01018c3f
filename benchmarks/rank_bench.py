"""mAP/CMC speed: benchbench.reid.metrics.evaluate_rank vs torchreid's evaluate_rank.

A Market-1501-sized problem (3,368 queries x 15,913 gallery, 751 identities, 6 cameras,
distractors with id 0 and junk with id -1 in the gallery), random features so every
query has same-camera matches to exclude. torchreid runs its Python path (its Cython
extension is not on PyPI). Both must give the same mAP and CMC.

    .venv/bin/python benchmarks/rank_bench.py [--repeat 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchbench.reid.metrics import evaluate_rank

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torchreid warns that its Cython ranker is unavailable
    from torchreid.reid.metrics import evaluate_rank as torchreid_evaluate_rank


def market_sized_problem(seed: int = 0):
    """Features clustered by identity so the ranking is realistic (mAP well above chance)."""
    rng = np.random.default_rng(seed)
    n_q, n_g, n_ids, n_cams, dim = 3368, 15913, 751, 6, 64
    centres = rng.normal(size=(n_ids + 1, dim))
    q_pids = rng.integers(1, n_ids + 1, n_q)
    g_pids = np.concatenate([rng.integers(1, n_ids + 1, n_g - 3000), np.zeros(2500, int), -np.ones(500, int)])
    q_cams, g_cams = rng.integers(0, n_cams, n_q), rng.integers(0, n_cams, n_g)
    qf = centres[q_pids] + 1.5 * rng.normal(size=(n_q, dim))
    gf = centres[np.maximum(g_pids, 0)] + 1.5 * rng.normal(size=(n_g, dim))
    distmat = torch.cdist(torch.from_numpy(qf).float(), torch.from_numpy(gf).float()).numpy()
    return distmat, q_pids, g_pids, q_cams, g_cams


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (ours)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    problem = market_sized_problem()
    t_ref, (cmc_ref, map_ref) = timed(lambda: torchreid_evaluate_rank(*problem, max_rank=50, use_cython=False), 1)
    t_ours, (cmc, mean_ap) = timed(lambda: evaluate_rank(*problem, max_rank=50), args.repeat)

    table = Table(title=f"Market-1501-sized ranking (3368 x 15913), torch threads={args.threads}")
    for col in ("implementation", "seconds", "mAP", "Rank-1", "Rank-5", "Rank-10"):
        table.add_column(col, justify="right" if col != "implementation" else "left")
    for name, t, m, c in (("torchreid evaluate_rank (python)", t_ref, map_ref, cmc_ref),
                          ("benchbench.reid.metrics", t_ours, mean_ap, cmc)):
        table.add_row(name, f"{t:.2f}", f"{m:.6f}", f"{c[0]:.6f}", f"{c[4]:.6f}", f"{c[9]:.6f}")
    console = Console()
    console.print(table)
    max_diff = max(abs(map_ref - mean_ap), float(np.abs(cmc_ref - cmc).max()))
    console.print(f"speed-up {t_ref / t_ours:.1f}x; max |difference| in mAP/CMC = {max_diff:.2e}")
    if max_diff > 1e-6:
        raise SystemExit("results differ")


if __name__ == "__main__":
    main()
