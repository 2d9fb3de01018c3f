"""Store -> standardized leaderboard tables.

The long table has one row per (track, dataset, model, defense, attack, metric) with
mean and std over seeds, the metric's direction, the protocol version and provenance:
a RobustBench-style entry that can be compared, validated and merged without our code.
Views (Markdown: defense rows x attack columns per metric, best marked) are derived
from it, never computed separately.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pandas as pd

from benchbench.cells import stable_hash
from benchbench.errors import ConfigError
from benchbench.hookspecs import hookimpl
from benchbench.store import Store

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("leaderboard.schema.json")
KEY_COLUMNS = ["track", "dataset", "model", "defense", "attack", "evaluator", "metric"]


@dataclass
class Board:
    """One track's leaderboard: the aggregated long table plus its header."""

    track: str
    protocol: str
    entries: pd.DataFrame  # KEY_COLUMNS + value, std, n_seeds, seeds, direction, ...

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "track": self.track,
            "protocol": self.protocol,
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "entries": json.loads(self.entries.to_json(orient="records")),
        }


def _protocol(components_json: str) -> str:
    """Task name, version and params hash: entries are comparable only within one protocol."""
    task = json.loads(components_json)["task"]
    return f"{task['name']}@{task['version']}#{stable_hash(task['params'], 8)}"


def _provenance(group: pd.DataFrame) -> dict[str, Any]:
    comps = json.loads(group["components_json"].iloc[0])

    def who(c: dict[str, Any]) -> str:
        return f"{c['name']}@{c['version']} ({c['distribution']} {c['plugin_version']})"

    evaluator = next(e for e in comps["evaluators"] if e["name"] == group["evaluator"].iloc[0])
    return {
        "attack": who(comps["attack"]), "attack_params": comps["attack"]["params"],
        "defense": who(comps["defense"]), "defense_params": comps["defense"]["params"],
        "evaluator": who(evaluator),
        "git_commit": sorted(set(group["git_commit"])),
        "versions": json.loads(group["versions_json"].iloc[0]),
        "host": group["host"].iloc[0],
        "cell_keys": sorted(group["cell_key"]),
        "wall_seconds_mean": round(float(group["wall_seconds"].mean()), 2),
    }


def build_boards(store_path: str | Path) -> list[Board]:
    with Store(store_path) as store:
        df = store.long_table()
    if df.empty:
        raise ConfigError(f"no finished cells in {store_path}; run `benchbench grid CONFIG` first")
    df["protocol"] = df["components_json"].map(_protocol)
    boards = []
    for (track, protocol), tdf in df.groupby(["track", "protocol"], sort=True):
        rows = []
        for key, g in tdf.groupby(KEY_COLUMNS, sort=True):
            values = g["value"].astype(float)
            rows.append({
                **dict(zip(KEY_COLUMNS, key)),
                "value": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "n_seeds": int(len(values)),
                "seeds": sorted(int(s) for s in g["seed"]),
                "direction": "higher" if bool(g["higher_is_better"].iloc[0]) else "lower",
                "formula_version": str(g["formula_version"].iloc[0]),
                "protocol_version": protocol,
                "provenance": _provenance(g),
            })
        boards.append(Board(track, protocol, pd.DataFrame(rows)))
    return boards


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def markdown(board: Board) -> str:
    """Per metric: defense rows x attack columns, mean ± std over seeds, best in bold."""
    e = board.entries
    lines = [f"# {board.track} leaderboard", "",
             f"Protocol `{board.protocol}`; data set(s): {', '.join(sorted(set(e['dataset'])))}; "
             f"model(s): {', '.join(sorted(set(e['model'])))}. Mean ± std over seeds "
             f"(n = {', '.join(map(str, sorted(set(e['n_seeds']))))}); best per column in bold.", ""]
    attacks = list(dict.fromkeys(["none", *sorted(set(e["attack"]) - {"none"})]))
    attacks = [a for a in attacks if a in set(e["attack"])]
    for (evaluator, metric), m in e.groupby(["evaluator", "metric"], sort=False):
        direction = m["direction"].iloc[0]
        lines += [f"## {evaluator} / {metric} ({'higher' if direction == 'higher' else 'lower'} is better)", ""]
        cols = [a for a in attacks if a in set(m["attack"])]
        lines.append("| defense | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        best = {}
        for a in cols:
            vals = m[m["attack"] == a]["value"]
            if len(vals) > 1:
                best[a] = vals.max() if direction == "higher" else vals.min()
        for defense, d in m.groupby("defense", sort=True):
            cells = []
            for a in cols:
                row = d[d["attack"] == a]
                if row.empty:
                    cells.append("–")
                    continue
                r = row.iloc[0]
                text = _fmt(r["value"], r["std"], r["n_seeds"])
                cells.append(f"**{text}**" if a in best and math.isclose(r["value"], best[a]) else text)
            lines.append(f"| {defense} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_md(board: Board, out: Path) -> list[Path]:
    path = out / "leaderboard.md"
    path.write_text(markdown(board))
    return [path]


def write_csv(board: Board, out: Path) -> list[Path]:
    path = out / "leaderboard.csv"
    flat = board.entries.drop(columns=["provenance", "seeds"])
    flat.to_csv(path, index=False, float_format="%.6g")
    return [path]


def write_json(board: Board, out: Path) -> list[Path]:
    path = out / "leaderboard.json"
    data = board.to_json()
    validate_board(data)  # never publish what `benchbench validate` would reject
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    return [path]


BUILTIN_WRITERS: dict[str, Callable[[Board, Path], list[Path]]] = {
    "md": write_md, "csv": write_csv, "json": write_json,
}


@hookimpl
def benchbench_leaderboard_writers() -> dict[str, Callable[[Board, Path], list[Path]]]:
    """The built-in formats are a plugin like any other writer."""
    return dict(BUILTIN_WRITERS)


def write_boards(boards: list[Board], out_dir: str | Path,
                 writers: dict[str, Callable[[Board, Path], list[Path]]] | None = None) -> list[Path]:
    """Write every board under ``out_dir/<track>/`` with every writer."""
    writers = writers or BUILTIN_WRITERS
    written = []
    if len({b.track for b in boards}) < len(boards):
        tracks = [b.track for b in boards]
        dup = next(t for t in tracks if tracks.count(t) > 1)
        raise ConfigError(f"the store mixes protocols for track '{dup}' ("
                          f"{', '.join(b.protocol for b in boards if b.track == dup)}); "
                          f"use one store per protocol (--store)")
    for board in boards:
        out = Path(out_dir) / board.track
        out.mkdir(parents=True, exist_ok=True)
        for writer in writers.values():
            written += writer(board, out)
    return written


def validate_board(data: Any) -> list[str]:
    """Problems with a leaderboard JSON, one line each; raises nothing, returns [] if valid."""
    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{'/'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}"
                for err in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))]
    if problems:
        return problems
    seen = set()
    for i, entry in enumerate(data["entries"]):
        for field in ("value", "std"):
            if not math.isfinite(entry[field]):
                problems.append(f"entries/{i}/{field}: not a finite number ({entry[field]})")
        if entry["protocol_version"] != data["protocol"]:
            problems.append(f"entries/{i}: protocol {entry['protocol_version']} differs from the "
                            f"board's {data['protocol']}")
        key = tuple(entry[k] for k in KEY_COLUMNS)
        if key in seen:
            problems.append(f"entries/{i}: duplicate entry for {dict(zip(KEY_COLUMNS, key))}")
        seen.add(key)
    return problems
