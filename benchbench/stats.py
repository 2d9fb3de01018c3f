"""Seed statistics for leaderboards: confidence intervals and when a lead is a lead.

With the handful of seeds a grid can afford, mean ± std alone invites reading noise as
a ranking. Every entry therefore carries a 95% bootstrap confidence interval of its
mean over seeds, and a board marks a best entry only when its value lies outside the
runner-up's interval. With 2-3 seeds the percentile bootstrap interval is close to
[min, max] of the seeds (it undercovers; there is nothing better to do with n = 3), so
a marked lead means "better than every seed of the runner-up", a conservative reading.
One seed gives no interval, and no entry is marked.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

CONFIDENCE = 0.95
N_RESAMPLES = 9999


def bootstrap_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean over seeds; ``None`` for fewer than 2 seeds.

    The resampling generator is seeded so a board is reproducible byte for byte.
    """
    from scipy.stats import bootstrap  # here: every command loads the writers, few need scipy

    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return None
    res = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=N_RESAMPLES,
                    method="percentile", rng=np.random.default_rng(0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def clear_best(rows: pd.DataFrame, higher_is_better: bool) -> object | None:
    """Index label of the row that leads by more than the runner-up's interval, else ``None``.

    ``rows`` holds one column's competitors with ``value``, ``ci_low``, ``ci_high``
    (``NaN``/``None`` when the runner-up has no interval: then nothing is marked).
    """
    if len(rows) < 2:
        return None
    ranked = rows.sort_values("value", ascending=not higher_is_better, kind="stable")
    best, runner_up = ranked.iloc[0], ranked.iloc[1]
    bound = runner_up["ci_high"] if higher_is_better else runner_up["ci_low"]
    if bound is None or pd.isna(bound):
        return None
    beats = best["value"] > bound if higher_is_better else best["value"] < bound
    return ranked.index[0] if beats else None
