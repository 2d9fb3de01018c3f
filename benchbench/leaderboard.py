"""Store -> standardized leaderboard tables, their views, and their validation.

The long table has one row per (track, dataset, model, defense, attack, evaluator,
metric) with the per-seed values, their mean, std and 95% bootstrap interval, the
metric's direction and role, the protocol version, where the entry came from
(``measured`` here or ``submitted`` by someone else) and its provenance: a
RobustBench-style entry that can be compared, validated and merged without our code.
Every view (Markdown here, HTML in ``benchbench.site``, plots in ``benchbench.plots``)
is derived from it, never computed separately.

Comparability: the protocol string is ``task@version#hash(task params, threads)``. The
task params are the track's whole protocol (data set params such as the data root or the
synthetic generator's size, model, training budget) and the torch thread count the cells
computed with (it moves every float; ``benchbench.numerics``), so two entries with one protocol
and one ``dataset`` name were produced on the same data spec. There is no separate
data-set fingerprint field: hashing the data params again would repeat the protocol
hash, and a hash of the data *contents* needs each task to read its files (see
docs/leaderboards.md).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import jsonschema
import pandas as pd

from benchbench.cells import stable_hash
from benchbench.errors import ConfigError
from benchbench.hookspecs import hookimpl
from benchbench.stats import bootstrap_ci, clear_best
from benchbench.store import Store

if TYPE_CHECKING:
    from benchbench.registry import Registry

SCHEMA_VERSION = 2
SCHEMA_PATH = Path(__file__).with_name("leaderboard.schema.json")
KEY_COLUMNS = ["track", "dataset", "model", "defense", "attack", "evaluator", "metric"]
CLEAN = "none"  # every track's clean reference attack and standard-training defense
SUBMITTED_MARK = "†"

Writer = Callable[["Board", Path], list[Path]]


@dataclass
class Board:
    """One track's leaderboard: the aggregated long table plus its header."""

    track: str
    protocol: str
    entries: pd.DataFrame  # KEY_COLUMNS + value, std, ci_low, ci_high, seeds, ..., provenance

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "track": self.track,
            "protocol": self.protocol,
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "entries": json.loads(self.entries.to_json(orient="records", double_precision=15)),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Board":
        """A board from its published JSON (e.g. after merging submissions)."""
        return cls(data["track"], data["protocol"], pd.DataFrame(data["entries"]))


def _protocol(components_json: str) -> str:
    """Task name, version and hash of its params and thread count (None: a store from before
    threads were recorded): entries are comparable only within one protocol."""
    task = json.loads(components_json)["task"]
    return f"{task['name']}@{task['version']}#{stable_hash([task['params'], task.get('threads')], 8)}"


def _evaluator(group: pd.DataFrame) -> dict[str, Any]:
    comps = json.loads(group["components_json"].iloc[0])
    return next(e for e in comps["evaluators"] if e["name"] == group["evaluator"].iloc[0])


def _provenance(group: pd.DataFrame) -> dict[str, Any]:
    comps = json.loads(group["components_json"].iloc[0])

    def who(c: dict[str, Any]) -> str:
        return f"{c['name']}@{c['version']} ({c['distribution']} {c['plugin_version']})"

    return {
        "attack": who(comps["attack"]), "attack_params": comps["attack"]["params"],
        "defense": who(comps["defense"]), "defense_params": comps["defense"]["params"],
        "evaluator": who(_evaluator(group)),
        "git_commit": sorted(set(group["git_commit"])),
        "versions": json.loads(group["versions_json"].iloc[0]),
        "host": group["host"].iloc[0],
        "cell_keys": sorted(group["cell_key"]),
        "wall_seconds_mean": round(float(group["wall_seconds"].mean()), 2),
    }


Roles = dict[tuple[str, str, str], dict[str, str]]  # (track, evaluator, version) -> metric -> role


def declared_roles(registry: Registry) -> Roles:
    """Metric roles as the installed evaluators declare them, for results stored before
    their evaluator declared one (a role labels a metric for plots; it changes no number)."""
    return {(cls.track, cls.name, cls.version): {m.name: m.role for m in cls.metrics if m.role}
            for (kind, _track, _name), cls in registry.components.items() if kind == "evaluator"}


def _role(key: tuple, group: pd.DataFrame, roles: Roles) -> str | None:
    evaluator = _evaluator(group)
    stored = evaluator.get("metric_roles", {}).get(key[-1])
    return stored or roles.get((key[0], evaluator["name"], evaluator["version"]), {}).get(key[-1])


def _entry(key: tuple, group: pd.DataFrame, protocol: str, roles: Roles) -> dict[str, Any]:
    group = group.sort_values("seed")
    values = [float(v) for v in group["value"]]
    ci = bootstrap_ci(values)
    return {
        **dict(zip(KEY_COLUMNS, key)),
        "value": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "ci_low": ci[0] if ci else None,
        "ci_high": ci[1] if ci else None,
        "n_seeds": len(values),
        "seeds": [int(s) for s in group["seed"]],
        "seed_values": values,
        "direction": "higher" if bool(group["higher_is_better"].iloc[0]) else "lower",
        "role": _role(key, group, roles),
        "formula_version": str(group["formula_version"].iloc[0]),
        "protocol_version": protocol,
        "source": "measured",
        "provenance": _provenance(group),
    }


def _variant_labels(df: pd.DataFrame, role: str) -> pd.Series:
    """The attack or defense column, with the distinguishing params appended to a name
    that the board ran with several param sets (``clamp(bound=2.0)``), so variants get
    rows of their own instead of being averaged together."""
    params = df["components_json"].map(lambda c: json.loads(c)[role]["params"])
    labels = df[role].copy()
    for name in set(df[role]):
        mask = df[role] == name
        variants = {json.dumps(p, sort_keys=True): p for p in params[mask]}.values()
        if len(variants) < 2:
            continue
        keys = sorted({k for p in variants for k in p})
        differ = [k for k in keys if len({json.dumps(p.get(k)) for p in variants}) > 1]
        labels[mask] = params[mask].map(lambda p: f"{name}({', '.join(f'{k}={p.get(k)}' for k in differ)})")
    return labels


def build_boards(store_path: str | Path, roles: Roles | None = None) -> list[Board]:
    """One board per (track, protocol) from every ``ok`` cell in the store. ``roles``
    (see ``declared_roles``) fills metric roles the stored results lack."""
    with Store(store_path) as store:
        df = store.long_table()
    if df.empty:
        raise ConfigError(f"no finished cells in {store_path}; run `benchbench grid CONFIG` first")
    df["protocol"] = df["components_json"].map(_protocol)
    boards = []
    for (track, protocol), tdf in df.groupby(["track", "protocol"], sort=True):
        tdf = tdf.assign(attack=_variant_labels(tdf, "attack"), defense=_variant_labels(tdf, "defense"))
        rows = [_entry(key, g, protocol, roles or {}) for key, g in tdf.groupby(KEY_COLUMNS, sort=True)]
        boards.append(Board(track, protocol, pd.DataFrame(rows)))
    return boards


# --- views -------------------------------------------------------------------------


@dataclass
class MetricTable:
    """One metric as defense rows x attack columns: what every view shows."""

    dataset: str
    model: str
    evaluator: str
    metric: str
    direction: str
    role: str | None
    defenses: list[str]
    attacks: list[str]
    cells: dict[tuple[str, str], pd.Series]  # (defense, attack) -> entry
    best: set[tuple[str, str]] = field(default_factory=set)  # clear leads per column


def _clean_first(names: set[str]) -> list[str]:
    return sorted(names, key=lambda n: (n != CLEAN, n))


def metric_tables(board: Board) -> list[MetricTable]:
    """One table per (data set, model, evaluator, metric), with its clear leads per column.

    A board normally holds one data set and one model; grouping by them anyway means a
    board that holds several never mixes their numbers.
    """
    tables = []
    e = board.entries
    for (dataset, model, evaluator, metric), m in e.groupby(["dataset", "model", "evaluator", "metric"],
                                                            sort=True):
        first = m.iloc[0]
        table = MetricTable(dataset, model, evaluator, metric, first["direction"], first["role"],
                            _clean_first(set(m["defense"])), _clean_first(set(m["attack"])),
                            {(r["defense"], r["attack"]): r for _, r in m.iterrows()})
        for attack, column in m.groupby("attack"):
            best = clear_best(column, first["direction"] == "higher")
            if best is not None:
                table.best.add((column.loc[best, "defense"], attack))
        tables.append(table)
    return tables


def fmt_value(entry: pd.Series) -> str:
    text = f"{entry['value']:.3f} ± {entry['std']:.3f}" if entry["n_seeds"] > 1 else f"{entry['value']:.3f}"
    return text + (SUBMITTED_MARK if entry.get("source") == "submitted" else "")


def describe(board: Board) -> str:
    """The one-paragraph header every view starts with."""
    e = board.entries
    return (f"Protocol {board.protocol}; data set(s): {', '.join(sorted(set(e['dataset'])))}; "
            f"model(s): {', '.join(sorted(set(e['model'])))}. Mean ± std over seeds "
            f"(n = {', '.join(map(str, sorted(set(e['n_seeds']))))}). Bold: the best entry of a column, "
            f"marked only where it lies outside the runner-up's 95% bootstrap interval over seeds. "
            f"{SUBMITTED_MARK}: submitted by others, not re-run here.")


def markdown(board: Board) -> str:
    """Per metric: defense rows x attack columns, mean ± std over seeds, clear leads in bold."""
    lines = [f"# {board.track} leaderboard", "", describe(board), ""]
    tables = metric_tables(board)
    several = len({(t.dataset, t.model) for t in tables}) > 1
    for t in tables:
        where = f" on {t.dataset} / {t.model}" if several else ""
        lines += [f"## {t.evaluator} / {t.metric}{where} ({t.direction} is better)", ""]
        lines.append("| defense | " + " | ".join(t.attacks) + " |")
        lines.append("|---|" + "---|" * len(t.attacks))
        for defense in t.defenses:
            cells = []
            for attack in t.attacks:
                entry = t.cells.get((defense, attack))
                text = "–" if entry is None else fmt_value(entry)
                cells.append(f"**{text}**" if (defense, attack) in t.best else text)
            lines.append(f"| {defense} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_md(board: Board, out: Path) -> list[Path]:
    path = out / "leaderboard.md"
    path.write_text(markdown(board))
    return [path]


def write_csv(board: Board, out: Path) -> list[Path]:
    path = out / "leaderboard.csv"
    flat = board.entries.drop(columns=["provenance", "seeds", "seed_values"])
    flat.to_csv(path, index=False, float_format="%.6g")
    return [path]


def write_json(board: Board, out: Path) -> list[Path]:
    path = out / "leaderboard.json"
    data = board.to_json()
    problems = validate_board(data)
    if problems:  # never publish what `benchbench validate` would reject
        raise ConfigError(f"refusing to write {path}: {problems[0]}")
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    return [path]


BUILTIN_WRITERS: dict[str, Writer] = {"md": write_md, "csv": write_csv, "json": write_json}


@hookimpl
def benchbench_leaderboard_writers() -> dict[str, Writer]:
    """The built-in formats are a plugin like any other writer."""
    return dict(BUILTIN_WRITERS)


def write_board(board: Board, out: Path, writers: dict[str, Writer] | None = None) -> list[Path]:
    """Write one board into ``out`` with every writer."""
    out.mkdir(parents=True, exist_ok=True)
    return [path for writer in (writers or BUILTIN_WRITERS).values() for path in writer(board, out)]


def write_boards(boards: list[Board], out_dir: str | Path,
                 writers: dict[str, Writer] | None = None) -> list[Path]:
    """Write every board under ``out_dir/<track>/`` with every writer."""
    tracks = [b.track for b in boards]
    dup = next((t for t in tracks if tracks.count(t) > 1), None)
    if dup:
        raise ConfigError(f"the store mixes protocols for track '{dup}' ("
                          f"{', '.join(b.protocol for b in boards if b.track == dup)}); "
                          f"use one store per protocol (--store)")
    return [p for board in boards for p in write_board(board, Path(out_dir) / board.track, writers)]


# --- validation --------------------------------------------------------------------


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _entry_problems(i: int, entry: dict[str, Any], data: dict[str, Any]) -> list[str]:
    where = f"entries/{i}"
    problems = [f"{where}/{f}: not a finite number ({entry[f]})"
                for f in ("value", "std", "ci_low", "ci_high")
                if entry[f] is not None and not math.isfinite(entry[f])]
    problems += [f"{where}/seed_values: not a finite number ({v})"
                 for v in entry["seed_values"] if not math.isfinite(v)]
    if problems:
        return problems
    if entry["protocol_version"] != data["protocol"]:
        problems.append(f"{where}: protocol {entry['protocol_version']} differs from the board's "
                        f"{data['protocol']}")
    if entry["track"] != data["track"]:
        problems.append(f"{where}: track '{entry['track']}' on the '{data['track']}' board")
    values = entry["seed_values"]
    if not entry["n_seeds"] == len(entry["seeds"]) == len(values):
        problems.append(f"{where}: n_seeds {entry['n_seeds']}, {len(entry['seeds'])} seeds and "
                        f"{len(values)} seed_values disagree")
    elif not _close(entry["value"], statistics.fmean(values)):
        problems.append(f"{where}/value: {entry['value']} is not the mean of seed_values "
                        f"({statistics.fmean(values)})")
    elif len(values) > 1 and not _close(entry["std"], statistics.stdev(values)):
        problems.append(f"{where}/std: {entry['std']} is not the std of seed_values "
                        f"({statistics.stdev(values)})")
    if (entry["ci_low"] is None) != (entry["ci_high"] is None) or (
            entry["ci_low"] is not None and entry["ci_low"] > entry["ci_high"]):
        problems.append(f"{where}: bad 95% interval [{entry['ci_low']}, {entry['ci_high']}]")
    return problems


def _metric_definitions(data: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str | None, str]]:
    """(evaluator, metric) -> (direction, role, formula version) of the first entry."""
    defs: dict[tuple[str, str], tuple[str, str | None, str]] = {}
    for e in data["entries"]:
        defs.setdefault((e["evaluator"], e["metric"]), (e["direction"], e["role"], e["formula_version"]))
    return defs


def _against_problems(data: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """Why ``data``'s entries cannot sit on the reference board ``ref``, one line each."""
    problems = []
    if data["track"] != ref["track"]:
        problems.append(f"track '{data['track']}' differs from the reference's '{ref['track']}'")
    if data["protocol"] != ref["protocol"]:
        problems.append(f"protocol {data['protocol']} differs from the reference's {ref['protocol']} "
                        f"(different task version or task params: the numbers are not comparable)")
    ref_datasets = {e["dataset"] for e in ref["entries"]}
    for dataset in sorted({e["dataset"] for e in data["entries"]} - ref_datasets):
        problems.append(f"data set '{dataset}' is not the reference's ({', '.join(sorted(ref_datasets))})")
    ref_defs = _metric_definitions(ref)
    for (evaluator, metric), (direction, role, formula) in _metric_definitions(data).items():
        want = ref_defs.get((evaluator, metric))
        if want is None:
            continue  # a new metric is a new column, not a conflict
        for what, got, expected in zip(("direction", "role", "formula version"),
                                       (direction, role, formula), want):
            if got != expected:
                problems.append(f"{evaluator}/{metric}: {what} {got!r} differs from the "
                                f"reference's {expected!r}")
    return problems


def validate_board(data: Any, against: dict[str, Any] | None = None) -> list[str]:
    """Problems with a leaderboard JSON, one line each; ``[]`` if valid.

    Checks the published schema (which pins the schema version), then each entry
    (finite numbers, mean/std consistent with the per-seed values, the board's protocol,
    no duplicates, one direction per metric), then, with ``against``, that the entries
    could sit on that reference board (same track, protocol and data sets; the same
    direction, role and formula for every metric both boards have).
    """
    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{'/'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}"
                for err in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))]
    if problems:
        return problems
    seen: set[tuple] = set()
    for i, entry in enumerate(data["entries"]):
        problems += _entry_problems(i, entry, data)
        key = tuple(entry[k] for k in KEY_COLUMNS)
        if key in seen:
            problems.append(f"entries/{i}: duplicate entry for {dict(zip(KEY_COLUMNS, key))}")
        seen.add(key)
    directions: dict[tuple[str, str], set[str]] = {}
    for e in data["entries"]:
        directions.setdefault((e["evaluator"], e["metric"]), set()).add(e["direction"])
    problems += [f"{ev}/{metric}: entries disagree on the direction ({' vs '.join(sorted(d))})"
                 for (ev, metric), d in directions.items() if len(d) > 1]
    if against is not None and not problems:
        ref_problems = validate_board(against)
        if ref_problems:
            return [f"reference board: {p}" for p in ref_problems]
        problems += _against_problems(data, against)
    return problems
