"""Pareto plots of clean utility vs robustness, one point per defense.

Which metrics go on the axes is data, not track names: evaluators declare each
metric's ``role`` (``benchbench.api.Metric.role``) and entries carry it. The x axis is a
``utility`` metric on the clean column (attack ``none``); the y axis is a
``robustness`` metric (e.g. attack success rate) averaged over the attacked columns. A
board without robustness metrics (ReID: mAP is both) plots each utility metric against
itself under attack. A robustness metric is paired with a utility metric of its own
evaluator if it has one, else with the board's first utility metric.

Written as SVG (for the HTML page) and PNG (for papers and READMEs).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from benchbench.hookspecs import hookimpl
from benchbench.leaderboard import CLEAN, Board

if TYPE_CHECKING:  # matplotlib is imported when drawing: every command loads the writers
    from matplotlib.figure import Figure

FORMATS = ("svg", "png")


@dataclass(frozen=True)
class ParetoPlot:
    dataset: str
    model: str
    utility: tuple[str, str]  # (evaluator, metric), read on the clean column
    robustness: tuple[str, str]  # (evaluator, metric), mean over attacked columns

    @property
    def stem(self) -> str:
        """File name without extension; names are plugin data, so only safe characters."""
        parts = [self.dataset, self.model, *self.utility, "vs", *self.robustness]
        return "pareto-" + "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts)


def pareto_plots(board: Board) -> list[ParetoPlot]:
    """The plots a board supports: needs role-tagged metrics, a clean and an attacked column."""
    plots = []
    for (dataset, model), e in board.entries.groupby(["dataset", "model"], sort=True):
        if CLEAN not in set(e["attack"]) or set(e["attack"]) == {CLEAN}:
            continue
        metrics = e[["evaluator", "metric", "role"]].drop_duplicates().sort_values(["evaluator", "metric"])
        utility = [(ev, m) for ev, m, role in metrics.itertuples(index=False) if role == "utility"]
        robust = [(ev, m) for ev, m, role in metrics.itertuples(index=False) if role == "robustness"]
        if not robust:  # the utility left under attack is the robustness
            plots += [ParetoPlot(dataset, model, u, u) for u in utility]
        elif utility:
            plots += [ParetoPlot(dataset, model, next((u for u in utility if u[0] == r[0]), utility[0]), r)
                      for r in robust]
    return plots


def _better_is_larger(entries: pd.DataFrame, metric: tuple[str, str]) -> bool:
    rows = entries[(entries["evaluator"] == metric[0]) & (entries["metric"] == metric[1])]
    return rows["direction"].iloc[0] == "higher"


def pareto_points(board: Board, plot: ParetoPlot) -> pd.DataFrame:
    """Per defense: ``utility`` (clean), ``robustness`` (mean over attacks), ``front`` (not
    dominated: no other defense is at least as good on both axes and better on one)."""
    e = board.entries[(board.entries["dataset"] == plot.dataset) & (board.entries["model"] == plot.model)]

    def metric(m: tuple[str, str]) -> pd.DataFrame:
        return e[(e["evaluator"] == m[0]) & (e["metric"] == m[1])]

    u = metric(plot.utility)
    utility = u[u["attack"] == CLEAN].set_index("defense")["value"]
    r = metric(plot.robustness)
    robustness = r[r["attack"] != CLEAN].groupby("defense")["value"].mean()
    points = pd.DataFrame({"utility": utility, "robustness": robustness}).dropna()
    points.index.name = "defense"
    sx = 1 if _better_is_larger(e, plot.utility) else -1
    sy = 1 if _better_is_larger(e, plot.robustness) else -1
    gx, gy = sx * points["utility"], sy * points["robustness"]  # larger is better on both
    points["front"] = [not ((gx >= x) & (gy >= y) & ((gx > x) | (gy > y))).any() for x, y in zip(gx, gy)]
    return points.reset_index()


def _axis_label(board: Board, metric: tuple[str, str], where: str) -> str:
    larger = _better_is_larger(board.entries, metric)
    return f"{metric[0]} / {metric[1]} {where} ({'higher' if larger else 'lower'} is better)"


def draw(board: Board, plot: ParetoPlot) -> "Figure":
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    points = pareto_points(board, plot)
    n_attacks = board.entries.loc[board.entries["attack"] != CLEAN, "attack"].nunique()
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    rest, front = points[~points["front"]], points[points["front"]].sort_values("utility")
    ax.scatter(rest["utility"], rest["robustness"], color="0.6", label="dominated")
    ax.plot(front["utility"], front["robustness"], "o-", color="tab:blue", label="Pareto front")
    for p in points.itertuples():
        # names are plugin data: never let them turn into mathtext
        ax.annotate(p.defense, (p.utility, p.robustness), textcoords="offset points", xytext=(4, 4),
                    fontsize=8, parse_math=False)
    ax.set_xlabel(_axis_label(board, plot.utility, "on clean data"), parse_math=False)
    ax.set_ylabel(_axis_label(board, plot.robustness, f"under attack (mean of {n_attacks})"),
                  parse_math=False, fontsize=9)
    if not _better_is_larger(board.entries, plot.robustness):
        ax.invert_yaxis()  # better is always up (and right, for higher-is-better utility)
    ax.set_title(f"{board.track}: {plot.dataset} / {plot.model}, one point per defense (mean over seeds)",
                 parse_math=False, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def write_plots(board: Board, out: Path) -> list[Path]:
    """Every Pareto plot of the board, as SVG and PNG."""
    import matplotlib

    paths = []
    with matplotlib.rc_context({"svg.hashsalt": "benchbench"}):  # stable SVG ids: diffable output
        for plot in pareto_plots(board):
            fig = draw(board, plot)
            for fmt in FORMATS:
                path = out / f"{plot.stem}.{fmt}"
                fig.savefig(path, metadata={"Date": None} if fmt == "svg" else None)
                paths.append(path)
    return paths


@hookimpl
def benchbench_leaderboard_writers():
    return {"plots": write_plots}
