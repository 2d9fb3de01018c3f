"""Pairs per second of `benchbench.ot.sinkhorn` against POT on the same problems.

Compared, for several token-set sizes (P image tokens x T caption tokens):
- ours: one batched call on float32 costs;
- POT loop: `ot.sinkhorn2(a, b, C, reg)` pair by pair on float64 numpy (how POT is
  usually called), timed on a subset of the pairs;
- ot.batch: POT's batched solver `ot.batch.solve_batch(C, reg, method=...)` on the same
  float32 torch tensors, log-domain ("log_sinkhorn") and plain ("sinkhorn");
all with the same stopping tolerance (each solver measures its marginal error its own
way: ours L1 of rows, ot.batch max L2 of rows, sinkhorn2 L2 of columns; L2 <= L1, so
POT is never stopped earlier). Accuracy is the max relative error of the transport cost
<P, C> against a tight float64 log-domain POT solve (stopThr 1e-12).

The costs are 1 - cos between tokens drawn around a few shared centres, so pairs range
from well matched to unrelated, as CLIP patch and word tokens do.

    .venv/bin/python benchmarks/ot_bench.py --quick
    .venv/bin/python benchmarks/ot_bench.py --sizes 16x8 32x16 64x32 --pairs 2048 --repeats 5

Ablations of our solver (module constants of `benchbench.ot`): `--sinkhorn-only` turns
the Newton phase off, `--cache-mb N` sets the chunk size the solver keeps in cache.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import ot
import ot.batch
import torch

import benchbench.ot
from benchbench.ot import cosine_cost, sinkhorn

R = TypeVar("R")


def make_costs(pairs: int, p: int, t: int, dim: int, seed: int) -> torch.Tensor:
    """(pairs, p, t) float64 cosine costs between clustered random token sets."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(16, dim, generator=g, dtype=torch.float64)

    def tokens(n: int) -> torch.Tensor:
        which = torch.randint(0, len(centres), (pairs, n), generator=g)
        return centres[which] + 0.7 * torch.randn(pairs, n, dim, generator=g, dtype=torch.float64)

    return cosine_cost(tokens(p), tokens(t))


def timed(run: Callable[[], R], repeats: int) -> tuple[float, R]:
    """Median wall time of `repeats` runs (the first, cold one is one of them), and the
    last run's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def max_rel_error(values: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(values / reference - 1)))


def bench_size(p: int, t: int, args: argparse.Namespace) -> dict[str, float]:
    costs = make_costs(args.pairs, p, t, args.dim, args.seed)
    costs32 = costs.float()
    subset = costs[: args.loop_pairs].numpy()
    a, b = np.full(p, 1 / p), np.full(t, 1 / t)
    reference = np.array([ot.sinkhorn2(a, b, c, args.reg, method="sinkhorn_log",
                                       stopThr=1e-12, numItermax=100_000) for c in subset])

    def ours():
        return sinkhorn(costs32, args.reg, tol=args.tol, max_iter=args.max_iter)

    def pot_loop():
        return np.array([ot.sinkhorn2(a, b, c, args.reg, stopThr=args.tol,
                                      numItermax=args.max_iter) for c in subset])

    def pot_batch(method: str):
        return lambda: ot.batch.solve_batch(costs32, args.reg, max_iter=args.max_iter,
                                            tol=args.tol, method=method, grad="detach")

    n_ref = len(reference)
    seconds, solved = timed(ours, args.repeats)
    row = {"P": p, "T": t, "ours": args.pairs / seconds, "iters": solved.n_iters,
           "err ours": max_rel_error(solved.distance[:n_ref].double().numpy(), reference)}
    seconds, values = timed(pot_loop, args.repeats)
    row["loop"] = len(subset) / seconds
    row["err loop"] = max_rel_error(values, reference)
    for method, key in (("log_sinkhorn", "batch-log"), ("sinkhorn", "batch")):
        seconds, solved = timed(pot_batch(method), args.repeats)
        row[key] = args.pairs / seconds
        row[f"iters {key}"] = solved.log["n_iter"] + 1
        row[f"err {key}"] = max_rel_error(solved.value_linear[:n_ref].double().numpy(), reference)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["16x8", "32x16", "64x32"],
                        help="PxT token-set sizes")
    parser.add_argument("--pairs", type=int, default=2048, help="pairs per batched call")
    parser.add_argument("--loop-pairs", type=int, default=256,
                        help="pairs timed in the POT loop and checked against the reference")
    parser.add_argument("--dim", type=int, default=64, help="token feature size")
    parser.add_argument("--reg", type=float, default=0.05)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--max-iter", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is shown")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sinkhorn-only", action="store_true",
                        help="ablation: our solver without its Newton phase")
    parser.add_argument("--cache-mb", type=float,
                        help="ablation: MB of kernel per solver chunk (default: the solver's)")
    parser.add_argument("--quick", action="store_true",
                        help="one small size, few pairs and repeats (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.pairs, args.loop_pairs, args.repeats = ["32x16"], 512, 64, 3
    torch.set_num_threads(args.threads)
    if args.sinkhorn_only:
        benchbench.ot._NEWTON_BELOW = 0.0
    if args.cache_mb is not None:
        benchbench.ot._CACHE_BYTES = int(args.cache_mb * 2**20)

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} threads={torch.get_num_threads()}, POT {ot.__version__}")
    print(f"reg={args.reg} tol={args.tol} pairs={args.pairs} (POT loop: {args.loop_pairs}) "
          f"D={args.dim} median of {args.repeats}; pairs/s, x = ours / other")
    print(f"ours: Newton {'off' if benchbench.ot._NEWTON_BELOW <= 0 else 'on'}, "
          f"chunks of {benchbench.ot._CACHE_BYTES / 2**20:g} MB of kernel")
    header = (f"{'P':>3} {'T':>3} | {'ours':>9} {'it':>4} {'err':>8} | {'POT loop':>9} {'x':>6} "
              f"{'err':>8} | {'batch-log':>9} {'x':>6} {'it':>4} {'err':>8} | "
              f"{'batch':>9} {'x':>6} {'it':>4} {'err':>8}")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        p, t = (int(n) for n in size.split("x"))
        r = bench_size(p, t, args)
        print(f"{p:>3} {t:>3} | {r['ours']:>9.0f} {r['iters']:>4} {r['err ours']:>8.1e} | "
              f"{r['loop']:>9.0f} {r['ours'] / r['loop']:>6.1f} {r['err loop']:>8.1e} | "
              f"{r['batch-log']:>9.0f} {r['ours'] / r['batch-log']:>6.1f} "
              f"{r['iters batch-log']:>4} {r['err batch-log']:>8.1e} | "
              f"{r['batch']:>9.0f} {r['ours'] / r['batch']:>6.1f} "
              f"{r['iters batch']:>4} {r['err batch']:>8.1e}")


if __name__ == "__main__":
    main()
