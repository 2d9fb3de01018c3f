"""A static ``index.html`` per track: opens from disk, no server, no external files.

It shows, from the board alone: one heat map per metric (defense rows x attack
columns, each column coloured on its own scale from its worst to its best entry, so
colour compares defenses under one attack and never says "attacks hurt"; diagnostic
metrics on a neutral scale; clear leads in bold),
the Pareto plots of ``benchbench.plots``, and every entry with its per-seed values and
provenance. Every table sorts on a header click (a few lines of inline JavaScript).

Plugin names and params are data from strangers: every string goes through
``html.escape`` and nothing is interpolated into the script.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from benchbench.hookspecs import hookimpl
from benchbench.leaderboard import (ADAPTIVE, COST_NOTE, DIAGNOSTIC, Board, MetricTable, adaptive_note, cost_tables,
                                    describe, fmt_cost, fmt_value, heading_note, metric_label, metric_tables)
from benchbench.plots import pareto_plots, pooled_attacks, titles, write_plots

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 75em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text { text-align: left; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " ▲"; }
th[aria-sort=descending]::after { content: " ▼"; }
td.best { font-weight: bold; outline: 2px solid #222; }
table.entries { font-size: 12px; width: 100%; }
table.entries td.wrap { white-space: normal; overflow-wrap: anywhere; min-width: 8em; }
table.entries td.text { white-space: normal; overflow-wrap: anywhere; }
tr.reference td { font-style: italic; color: #555; background: #fafafa; }
figure { display: inline-block; margin: 0 1em 1em 0; max-width: 46em; vertical-align: top; }
figure img { max-width: 100%; }
.small { font-size: 12px; color: #555; }
"""

# Sort a table's body rows by the clicked column: numbers by data-value, the rest as text.
SCRIPT = """
function sortTable(th) {
  const table = th.closest("table"), col = th.cellIndex;
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const key = (row) => {
    const cell = row.cells[col], v = cell.dataset.value;
    return v === undefined || v === "" ? cell.textContent.trim() : Number(v);
  };
  const compare = (a, b) => {
    const x = key(a), y = key(b);
    if (typeof x === "number" && typeof y === "number") return x - y;
    if (typeof x === "number") return -1;
    if (typeof y === "number") return 1;
    return x.localeCompare(y);
  };
  const body = table.tBodies[0];
  const rows = Array.from(body.rows).sort((a, b) => (ascending ? 1 : -1) * compare(a, b));
  body.append(...rows);
}
document.querySelectorAll("table.sortable th").forEach((th) => {
  th.tabIndex = 0;
  th.addEventListener("click", () => sortTable(th));
  th.addEventListener("keydown", (e) => { if (e.key === "Enter") sortTable(th); });
});
"""

def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"


def _ci(entry) -> str:
    if entry["ci_low"] is None or math.isnan(entry["ci_low"]):
        return "no interval (one seed)"
    return f"95% CI [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def column_positions(t: MetricTable) -> dict[tuple[str, str], float]:
    """Where each cell lies on its own column's scale, 0 (smallest) to 1 (largest).

    Each attack column is scaled alone: a table-wide scale would colour every clean
    column "good" and every attacked one "bad", which says that attacks hurt, not which
    defense is best. A column spans at least twice its entries' mean seed std, so
    differences within the seeds' spread stay near the middle (pale) instead of being
    stretched to the two ends.
    """
    positions = {}
    for attack in t.attacks:
        column = [(d, t.cells[d, attack]) for d in t.defenses if (d, attack) in t.cells]
        values = [float(entry["value"]) for _, entry in column]
        noise = sum(float(entry["std"]) for _, entry in column) / len(column)
        mid, span = (min(values) + max(values)) / 2, max(max(values) - min(values), 2 * noise)
        for (defense, _), v in zip(column, values):
            positions[defense, attack] = 0.5 if span == 0 else 0.5 + (v - mid) / span
    return positions


def _heat(t: MetricTable) -> dict[tuple[str, str], str]:
    """Background colour per cell: worst red to best blue within its column (direction-aware);
    a diagnostic metric, which ranks nothing, in light purples (darker: larger)."""
    import matplotlib  # here, not at import: every command loads the writers
    from matplotlib.colors import to_hex

    if t.role == DIAGNOSTIC:
        neutral = matplotlib.colormaps["Purples"]
        return {cell: to_hex(neutral(0.05 + 0.4 * pos)) for cell, pos in column_positions(t).items()}
    colors_of = matplotlib.colormaps["RdYlBu"]  # red = worst, blue = best; readable under black text
    return {cell: to_hex(colors_of(0.2 + 0.6 * (pos if t.direction == "higher" else 1 - pos)))
            for cell, pos in column_positions(t).items()}


def _metric_section(t: MetricTable, several: bool) -> str:
    where = f" on {t.dataset} / {t.model}" if several else ""
    role = f", role: {t.role}" if isinstance(t.role, str) and t.role != DIAGNOSTIC else ""
    head = "".join(f"<th>{_e(a)}</th>" for a in ["defense", *t.attacks])
    colors = _heat(t)
    rows = []
    for defense in t.defenses:
        cells = [f'<td class="text">{_e(defense)}</td>']
        for attack in t.attacks:
            entry = t.cells.get((defense, attack))
            if entry is None:
                cells.append("<td>–</td>")
                continue
            best = ' class="best"' if (defense, attack) in t.best else ""
            cells.append(f'<td{best} data-value="{_num(entry["value"])}" style="background:{colors[defense, attack]}"'
                         f' title="{_e(_ci(entry))}; n = {entry["n_seeds"]}">{_e(fmt_value(entry))}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    for ref, by_attack in t.references.items():  # not in the body: sorting leaves them under the defenses
        cells = "".join(f'<td>{f"{by_attack[a]:.3f}" if a in by_attack else "–"}</td>' for a in t.attacks)
        rows.append(f'<tr class="reference"><td class="text">{_e(ref)} (reference)</td>{cells}</tr>')
    n_defenses = len(t.defenses)
    body, foot = rows[:n_defenses], rows[n_defenses:]
    about = f"<p class=small>{_e(t.description)}</p>\n" if t.description else ""
    return (f"<h3>{_e(metric_label(t.evaluator, t.metric))}{_e(where)} "
            f"<span class=small>({_e(heading_note(t))}{_e(role)})</span></h3>\n{about}"
            f'<table class="sortable heatmap"><thead><tr>{head}</tr></thead>\n'
            f"<tbody>{''.join(body)}</tbody>{f'<tfoot>{chr(10).join(foot)}</tfoot>' if foot else ''}</table>")


def _adaptive_section(board: Board, tables: list[MetricTable], several: bool) -> str:
    if not tables:
        return ""
    return (f"<h2>Adaptive attacks</h2>\n<p>{_e(adaptive_note(board))}</p>\n"
            + "\n".join(_metric_section(t, several) for t in tables))


def _cost_section(board: Board, several: bool) -> str:
    """The efficiency table: training cost per defense."""
    sections = []
    for c in cost_tables(board):
        where = f" on {c.dataset} / {c.model}" if several else ""
        head = "".join(f"<th>{_e(h)}</th>" for h in ["defense", *(f"{ev} / {m}" for ev, m in c.metrics)])
        rows = []
        for d in c.defenses:
            cells = "".join(f'<td data-value="{_num(c.values[d, m])}">{_e(fmt_cost(c.values[d, m]))}</td>'
                            if (d, m) in c.values else "<td>–</td>" for m in c.metrics)
            rows.append(f'<tr><td class="text">{_e(d)}</td>{cells}</tr>')
        sections.append(f"<h3>Training cost{_e(where)} <span class=small>(lower is better)</span></h3>\n"
                        f'<table class="sortable cost"><thead><tr>{head}</tr></thead>\n'
                        f"<tbody>{''.join(rows)}</tbody></table>")
    if not sections:
        return "<p class=small>No cost metrics on this board (add the <code>cost</code> evaluator).</p>"
    return f"<p class=small>{_e(COST_NOTE)}</p>\n" + "\n".join(sections)


def _pareto_section(board: Board) -> str:
    figures = []
    for plot in pareto_plots(board):
        title, _, _ = titles(board, plot)
        what = title.splitlines()[1]
        attacks = ", ".join(pooled_attacks(board, plot))
        figures.append(f'<figure><img src="{_e(plot.stem)}.svg" alt="{_e(what)}">'
                       f'<figcaption class=small>{_e(what)}; under attack: mean over {_e(attacks)} '
                       f'(<a href="{_e(plot.stem)}.png">PNG</a>)</figcaption></figure>')
    if not figures:
        return ("<p class=small>No Pareto plot: it needs metrics whose evaluators declare a role "
                "(utility / robustness), a clean column and an attacked column.</p>")
    return "\n".join(figures)


ENTRY_COLUMNS = ["defense", "attack", "metric", "mean", "std", "95% CI", "per seed", "seen in training",
                 "source", "plugins (defense; attack)", "git commit"]


def _fmt(value: float, entry) -> str:
    """A number as the tables show it: 3 decimals for a metric bounded by 1, else 3 significant
    digits (whole numbers from 100 on: seconds, steps)."""
    high = entry.get("high")
    return f"{value:.3f}" if high is not None and not pd.isna(high) and high <= 1 else fmt_cost(value)


def _entries_section(board: Board) -> str:
    """Every entry, one row each, in columns narrow enough for the page: data set and model
    (one per board, normally) go to a column only when the board holds several."""
    several = board.entries[["dataset", "model"]].drop_duplicates().shape[0] > 1
    rows = []
    for _, e in board.entries.iterrows():
        prov = e["provenance"] if isinstance(e["provenance"], dict) else {}
        per_seed = ", ".join(f"{s}: {_fmt(v, e)}" for s, v in zip(e["seeds"], e["seed_values"]))
        no_ci = e["ci_low"] is None or math.isnan(e["ci_low"])
        ci = "" if no_ci else f"[{_fmt(e['ci_low'], e)}, {_fmt(e['ci_high'], e)}]"
        text = [*((f"{e['dataset']} / {e['model']}",) if several else ()), e["defense"], e["attack"],
                metric_label(e["evaluator"], e["metric"])]
        cells = [f'<td class="text">{_e(v)}</td>' for v in text]
        cells += [f'<td data-value="{_num(e[c])}">{_e(_fmt(e[c], e))}</td>' for c in ("value", "std")]
        cells += [f'<td data-value="{_num(e["ci_low"])}">{_e(ci)}</td>',
                  f'<td class="text wrap">{_e(per_seed)}</td>']
        cells += [f'<td class="text">{_e(v)}</td>' for v in (
            "yes" if e.get("seen_in_training") is True else "", e["source"])]
        plugins = "; ".join(prov.get(k, "") for k in ("defense", "attack"))
        commits = ", ".join(c[:12] for c in prov.get("git_commit", []))
        cells += [f'<td class="text wrap">{_e(plugins)}</td>',
                  f'<td class="text" title="{_e(", ".join(prov.get("git_commit", [])))}">{_e(commits)}</td>']
        rows.append(f"<tr>{''.join(cells)}</tr>")
    columns = [*(["data set / model"] if several else []), *ENTRY_COLUMNS]
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    return (f"<p class=small>Each metric's direction and range are in its table above (and in the JSON). "
            f"Hover a commit for its full hash.</p>\n"
            f'<table class="sortable entries"><thead><tr>{head}</tr></thead>\n'
            f"<tbody>{chr(10).join(rows)}</tbody></table>")


def render(board: Board) -> str:
    """The whole page as one string."""
    tables = metric_tables(board)
    several = len({(t.dataset, t.model) for t in tables}) > 1
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(board.track)} leaderboard · benchbench</title>
<link rel="icon" href="data:,">
<style>{CSS}</style></head>
<body>
<h1>{_e(board.track)} leaderboard <span class=small>preset {_e(board.preset)}</span></h1>
<p>{_e(describe(board))}</p>
<p>Each column is coloured on its own scale, from its worst (red) to its best (blue) entry: colour
compares the defenses under one attack, never one attack with another, and entries closer than
their seeds' spread stay pale. Diagnostic tables are purple (darker: larger, not better).
Hover a cell for its interval. Click a column header to sort. Data:
<a href="leaderboard.json">JSON</a> (schema-checked by <code>benchbench validate</code>),
<a href="leaderboard.csv">CSV</a>.</p>
<h2>Per metric: defense × attack</h2>
{chr(10).join(_metric_section(t, several) for t in tables if t.section != ADAPTIVE)}
{_adaptive_section(board, [t for t in tables if t.section == ADAPTIVE], several)}
<h2>Efficiency</h2>
{_cost_section(board, several)}
<h2>Clean utility vs robustness</h2>
{_pareto_section(board)}
<h2>All entries</h2>
{_entries_section(board)}
<script>{SCRIPT}</script>
</body></html>
"""


def write_html(board: Board, out: Path) -> list[Path]:
    """``index.html`` plus the Pareto figures it shows (rendered here so they always match)."""
    figures = write_plots(board, out)
    page = out / "index.html"
    page.write_text(render(board))
    return [*figures, page]


@hookimpl
def benchbench_leaderboard_writers():
    return {"html": write_html}
