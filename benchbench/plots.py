"""Pareto plots of clean utility vs robustness, one point per defense.

Which metrics go on the axes is data, not track names: evaluators declare each
metric's ``role`` (``benchbench.api.Metric.role``) and entries carry it. The x axis is a
``utility`` metric on the clean column (attack ``none``); the y axis is a
``robustness`` metric (e.g. attack success rate) averaged over the attacked columns. A
board without robustness metrics (ReID: mAP is both) plots each utility metric against
itself under attack. A robustness metric is paired with a utility metric of its own
evaluator if it has one, else with the board's first utility metric.

Each point carries seed error bars (std over seeds; on the y axis, of each seed's mean
over the pooled attacks), each defense is named in a legend outside the axes (labels
next to points overlap and get clipped), the titles and axis labels name the preset,
the pooled attacks and each axis's direction, and a declared reference of an axis's
metric (zero-shot ``chance``) is drawn where it falls inside the axis, else named in
its label.

Written as SVG (for the HTML page) and PNG (for papers and READMEs).
"""
from __future__ import annotations

import re
import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from benchbench.hookspecs import hookimpl
from benchbench.leaderboard import CLEAN, Board, metric_label

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
    def same_metric(self) -> bool:
        """One metric on both axes: clean vs under attack (ReID's mAP)."""
        return self.utility == self.robustness

    @property
    def stem(self) -> str:
        """File name without extension: ``pareto-<data>-<model>-linear_probe-top1-vs-asr`` or, with
        one metric on both axes, ``...-reid_rank-mAP-clean-vs-attacked``. Names are plugin
        data, so only safe characters."""
        def name(m: tuple[str, str]) -> list[str]:
            return [m[1]] if m[0] == m[1] else list(m)

        tail = ["clean", "vs", "attacked"] if self.same_metric else ["vs", *name(self.robustness)]
        parts = [self.dataset, self.model, *name(self.utility), *tail]
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


def _rows(board: Board, plot: ParetoPlot, metric: tuple[str, str]) -> pd.DataFrame:
    e = board.entries
    return e[(e["dataset"] == plot.dataset) & (e["model"] == plot.model)
             & (e["evaluator"] == metric[0]) & (e["metric"] == metric[1])]


def _better_is_larger(entries: pd.DataFrame, metric: tuple[str, str]) -> bool:
    rows = entries[(entries["evaluator"] == metric[0]) & (entries["metric"] == metric[1])]
    return rows["direction"].iloc[0] == "higher"


def pooled_attacks(board: Board, plot: ParetoPlot) -> list[str]:
    """The attacked columns whose mean is the y axis."""
    return sorted(set(_rows(board, plot, plot.robustness)["attack"]) - {CLEAN})


def _pooled_std(rows: pd.DataFrame) -> float:
    """Std over seeds of each seed's mean over the attack columns in ``rows`` (the seeds every
    column has); 0 with fewer than two such seeds."""
    per_column = [dict(zip(r["seeds"], r["seed_values"])) for _, r in rows.iterrows()]
    seeds = set.intersection(*(set(c) for c in per_column)) if per_column else set()
    means = [statistics.fmean(c[s] for c in per_column) for s in sorted(seeds)]
    return statistics.stdev(means) if len(means) > 1 else 0.0


def pareto_points(board: Board, plot: ParetoPlot) -> pd.DataFrame:
    """Per defense: ``utility`` (clean) and its seed std ``utility_std``, ``robustness`` (mean over
    attacks) and ``robustness_std`` (std over seeds of the per-seed mean over attacks), ``front``
    (not dominated: no other defense is at least as good on both axes and better on one)."""
    u = _rows(board, plot, plot.utility)
    clean = u[u["attack"] == CLEAN].set_index("defense")
    r = _rows(board, plot, plot.robustness)
    attacked = r[r["attack"] != CLEAN]
    points = pd.DataFrame({"utility": clean["value"], "utility_std": clean["std"],
                           "robustness": attacked.groupby("defense")["value"].mean(),
                           "robustness_std": attacked.groupby("defense")[["seeds", "seed_values"]].apply(_pooled_std)})
    points = points.dropna(subset=["utility", "robustness"])
    points.index.name = "defense"
    sx = 1 if _better_is_larger(board.entries, plot.utility) else -1
    sy = 1 if _better_is_larger(board.entries, plot.robustness) else -1
    gx, gy = sx * points["utility"], sy * points["robustness"]  # larger is better on both
    points["front"] = [not ((gx >= x) & (gy >= y) & ((gx > x) | (gy > y))).any() for x, y in zip(gx, gy)]
    return points.reset_index()


def references(board: Board, plot: ParetoPlot, axis: str) -> dict[str, float]:
    """The declared reference points (e.g. ``chance``) of an axis's metric, as that axis reads
    them: on the clean column for x, the mean over the pooled attacks for y."""
    metric = plot.utility if axis == "x" else plot.robustness
    out = {}
    for ref in board.definition(*metric).get("references", []):
        rows = _rows(board, plot, (metric[0], ref))
        rows = rows[rows["attack"] == CLEAN] if axis == "x" else rows[rows["attack"] != CLEAN]
        if len(rows):
            out[ref] = float(rows["value"].mean())
    return out


def titles(board: Board, plot: ParetoPlot) -> tuple[str, str, str]:
    """(title, x label, y label), each naming what it shows without the reader's guessing."""
    u, r = metric_label(*plot.utility), metric_label(*plot.robustness)
    n_seeds = sorted(set(_rows(board, plot, plot.utility)["n_seeds"]))
    what = f"{r} under attack vs clean {u}" if not plot.same_metric else f"{u}: clean vs under attack"
    title = (f"{board.track} (preset {board.preset}): {plot.dataset} / {plot.model}\n{what}\none point per "
             f"defense, mean ± std over {'/'.join(map(str, n_seeds))} seeds")

    def direction(metric: tuple[str, str]) -> str:
        return "higher" if _better_is_larger(board.entries, metric) else "lower"

    attacks = pooled_attacks(board, plot)
    xlabel = f"{u} on clean data ({direction(plot.utility)} is better)"
    ylabel = (f"{r} under attack ({direction(plot.robustness)} is better), mean over "
              f"{len(attacks)} attack{'s' if len(attacks) > 1 else ''}: {', '.join(attacks)}")
    return title, xlabel, textwrap.fill(ylabel, 60)


def draw(board: Board, plot: ParetoPlot) -> "Figure":
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    points = pareto_points(board, plot).sort_values("utility")
    title, xlabel, ylabel = titles(board, plot)
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.add_subplot()
    front = points[points["front"]]
    ax.plot(front["utility"], front["robustness"], "-", color="0.55", lw=1, zorder=1, label="Pareto front")
    colours = [f"C{i % 10}" for i in range(len(points))]
    for colour, p in zip(colours, points.itertuples()):
        # names are plugin data: never let them turn into mathtext (legend labels: escaped below)
        ax.errorbar(p.utility, p.robustness, xerr=p.utility_std, yerr=p.robustness_std, fmt="o", ms=7,
                    color=colour, mfc=colour if p.front else "white", mew=1.5, capsize=3, elinewidth=1,
                    zorder=2, label=f"{p.defense}{' (front)' if p.front else ''}".replace("$", r"\$"))
    ax.margins(0.08)
    if not _better_is_larger(board.entries, plot.robustness):
        ax.invert_yaxis()  # better is always up (and right, for higher-is-better utility)
    for axis, line in (("x", ax.axvline), ("y", ax.axhline)):
        lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
        for ref, value in references(board, plot, axis).items():
            if lo <= value <= hi:
                line(value, ls=":", color="0.3", lw=1, label=f"{ref} ({value:.3f})")
            elif axis == "x":
                xlabel += f"; {ref} {value:.3f}, off the axis"
            else:
                ylabel += f"; {ref} {value:.3f}, off the axis"
    ax.set_xlabel(xlabel, parse_math=False, fontsize=9)
    ax.set_ylabel(ylabel, parse_math=False, fontsize=9)
    ax.set_title(title, parse_math=False, fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right center", fontsize=8, title="defense (hollow: dominated)", title_fontsize=8)
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
