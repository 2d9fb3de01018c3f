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

import html
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

SCHEMA_VERSION = 6  # 5: the board's preset; role "diagnostic"; 6: adaptive attacks (adaptive_to, extends)
SCHEMA_PATH = Path(__file__).with_name("leaderboard.schema.json")
KEY_COLUMNS = ["track", "dataset", "model", "defense", "attack", "evaluator", "metric"]
CLEAN = "none"  # every track's clean reference attack and standard-training defense
SEEN_MARK = "†"  # the defense trained against this attack: not a generalisation test
SUBMITTED_MARK = "‡"
ADAPTIVE = "adaptive"  # the board section of adaptive attacks (Attack.adaptive_to)
COST = "cost"  # the metric role of training cost: the efficiency table, not a heat map
DIAGNOSTIC = "diagnostic"  # a metric role that describes cells, never ranks defenses: no best mark
SMOKE = "smoke"  # the test-size preset: its numbers check the pipeline, they rank nothing

Writer = Callable[["Board", Path], list[Path]]


@dataclass
class Board:
    """One track's leaderboard: the aggregated long table plus its header."""

    track: str
    protocol: str
    entries: pd.DataFrame  # KEY_COLUMNS + value, std, ci_low, ci_high, seeds, ..., provenance
    # "evaluator/metric" -> {"description", "references"}: what each metric means, as declared
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    preset: str = "default"  # the grid's --preset: smoke boards are test-size and rank nothing

    @property
    def ranks(self) -> bool:
        """Whether the board marks best entries at all (not on the test-size preset)."""
        return self.preset != SMOKE

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "track": self.track,
            "protocol": self.protocol,
            "preset": self.preset,
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "metrics": self.metrics,
            "entries": json.loads(self.entries.to_json(orient="records", double_precision=15)),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Board":
        """A board from its published JSON (e.g. after merging submissions)."""
        return cls(data["track"], data["protocol"], pd.DataFrame(data["entries"]), data.get("metrics", {}),
                   data["preset"])

    def definition(self, evaluator: str, metric: str) -> dict[str, Any]:
        return self.metrics.get(f"{evaluator}/{metric}", {})


def _protocol(components_json: str) -> str:
    """Task name, version and hash of its params, thread count (None: a store from before
    threads were recorded), precision (recorded only when not fp32) and processes (only
    when more than one), so older rows keep their protocol: entries are comparable only
    within one protocol."""
    task = json.loads(components_json)["task"]
    numerics = [task["params"], task.get("threads")] + ([task["precision"]] if "precision" in task else [])
    numerics += [{"processes": task["processes"]}] if "processes" in task else []
    return f"{task['name']}@{task['version']}#{stable_hash(numerics, 8)}"


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
        "trained_against": _trained_against(group),
        "evaluator": who(_evaluator(group)),
        "git_commit": sorted(set(group["git_commit"])),
        "versions": json.loads(group["versions_json"].iloc[0]),
        "host": group["host"].iloc[0],
        "cell_keys": sorted(group["cell_key"]),
        "wall_seconds_mean": round(float(group["wall_seconds"].mean()), 2),
    }


def _gradient_note(components_json: str) -> str:
    """`` [attacker: bpda]``: how the attacks got through a test-time purifier (``exact``,
    ``bpda`` or ``oblivious``, ``Defense.attacker_gradient``), part of the defense's row label
    so the threat model is read with the numbers; empty for a defense without a purifier."""
    gradient = json.loads(components_json)["defense"].get("attacker_gradient")
    return f" [attacker: {gradient}]" if gradient else ""


def _trained_against(group: pd.DataFrame) -> list[str]:
    """The attacks the cell's defense trained against, as the runner stored them."""
    return sorted({a for c in group["components_json"] for a in json.loads(c)["defense"].get("trained_against", [])})


Roles = dict[tuple[str, str, str], dict[str, str]]  # (track, evaluator, version) -> metric -> role
# (track, evaluator, version) -> metric -> Metric.definition()
Definitions = dict[tuple[str, str, str], dict[str, dict[str, Any]]]


def declared_roles(registry: Registry) -> Roles:
    """Metric roles as the installed evaluators declare them, for results stored before
    their evaluator declared one (a role labels a metric for plots; it changes no number)."""
    return {(cls.track, cls.name, cls.version): {m.name: m.role for m in cls.metrics if m.role}
            for (kind, _track, _name), cls in registry.components.items() if kind == "evaluator"}


def declared_definitions(registry: Registry) -> Definitions:
    """Metric definitions (range, description, references) as the installed evaluators
    declare them, for results stored before the runner recorded them."""
    return {(cls.track, cls.name, cls.version): {m.name: m.definition() for m in cls.metrics}
            for (kind, _track, _name), cls in registry.components.items() if kind == "evaluator"}


def _role(key: tuple, group: pd.DataFrame, roles: Roles) -> str | None:
    evaluator = _evaluator(group)
    stored = evaluator.get("metric_roles", {}).get(key[-1])
    return stored or roles.get((key[0], evaluator["name"], evaluator["version"]), {}).get(key[-1])


def _definition(key: tuple, group: pd.DataFrame, definitions: Definitions) -> dict[str, Any]:
    evaluator = _evaluator(group)
    stored = evaluator.get("metric_definitions", {}).get(key[-1])
    return stored or definitions.get((key[0], evaluator["name"], evaluator["version"]), {}).get(key[-1], {})


def _entry(key: tuple, group: pd.DataFrame, protocol: str, roles: Roles,
           definitions: Definitions) -> dict[str, Any]:
    group = group.sort_values("seed")
    values = [float(v) for v in group["value"]]
    ci = bootstrap_ci(values)
    definition = _definition(key, group, definitions)
    base_attack = group["attack_name"].iloc[0]  # the attack's name, without a variant label
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
        "low": definition.get("low"),
        "high": definition.get("high"),
        "seen_in_training": base_attack != CLEAN and base_attack in _trained_against(group),
        "formula_version": str(group["formula_version"].iloc[0]),
        "protocol_version": protocol,
        "source": "measured",
        "provenance": _provenance(group),
        **_adaptive(group),
    }


def _adaptive(group: pd.DataFrame) -> dict[str, str | None]:
    """``adaptive_to`` and ``extends`` of an adaptive attack (``Attack.adaptive_to``), as the
    runner stored them; None for any other attack."""
    attack = json.loads(group["components_json"].iloc[0])["attack"]
    return {k: attack.get(k) or None for k in ("adaptive_to", "extends")}


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


def build_boards(store_path: str | Path, roles: Roles | None = None,
                 definitions: Definitions | None = None) -> list[Board]:
    """One board per (track, protocol, preset) from every ``ok`` cell in the store. ``roles``
    (see ``declared_roles``) and ``definitions`` (``declared_definitions``) fill what
    the stored results lack."""
    with Store(store_path) as store:
        df = store.long_table()
    if df.empty:
        raise ConfigError(f"no finished cells in {store_path}; run `benchbench grid CONFIG` first")
    df["protocol"] = df["components_json"].map(_protocol)
    df["preset"] = df["preset"].fillna("unknown")  # groupby would drop a NULL preset's rows
    boards = []
    for (track, protocol, preset), tdf in df.groupby(["track", "protocol", "preset"], sort=True):
        tdf = tdf.assign(attack_name=tdf["attack"], attack=_variant_labels(tdf, "attack"),
                         defense=_variant_labels(tdf, "defense") + tdf["components_json"].map(_gradient_note))
        tdf = _one_value_per_seed(tdf)
        groups = list(tdf.groupby(KEY_COLUMNS, sort=True))
        rows = [_entry(key, g, protocol, roles or {}, definitions or {}) for key, g in groups]
        metrics = {}
        for key, g in groups:
            d = _definition(key, g, definitions or {})
            metrics.setdefault(f"{key[5]}/{key[6]}", {"description": d.get("description", ""),
                                                      "references": list(d.get("references", []))})
        boards.append(Board(track, protocol, pd.DataFrame(rows), metrics, preset))
    return boards


def _one_value_per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """One row per entry and seed. Two cells can report the same metric of the same model
    and seed: grids whose evaluator lists differ (one with ``reid-bias``, one without)
    evaluate one cached model twice, with the same value; those are counted once. Two
    different values (an evaluator run with other params) would make one entry of two
    measurements, so they are refused."""
    df = df.drop_duplicates(subset=[*KEY_COLUMNS, "seed", "value"])
    clash = df[df.duplicated(subset=[*KEY_COLUMNS, "seed"], keep=False)]
    if len(clash):
        r = clash.iloc[0]
        raise ConfigError(f"the store holds different values of {r['evaluator']}/{r['metric']} for "
                          f"{r['defense']} under {r['attack']}, seed {r['seed']} (cells "
                          f"{', '.join(sorted(clash[(clash[KEY_COLUMNS] == r[KEY_COLUMNS]).all(axis=1)]['cell_key']))}): "
                          f"the evaluator ran with other params; use one store per evaluator setting")
    return df


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
    description: str = ""  # what the metric measures, with its range and reference points
    # reference metric name -> attack -> its mean over defenses (rows under the defenses)
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    section: str = ""  # "": the main tables; ADAPTIVE: adaptive attacks beside the attacks they extend


def metric_label(evaluator: str, metric: str) -> str:
    """How views name a metric: ``linear-probe / top1``, but ``asr``, not ``asr / asr``."""
    return metric if metric == evaluator else f"{evaluator} / {metric}"


def _clean_first(names: set[str]) -> list[str]:
    return sorted(names, key=lambda n: (n != CLEAN, n))


def _bound(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _range(entries: pd.DataFrame) -> str:
    low = _bound(entries["low"].iloc[0]) if "low" in entries else None
    high = _bound(entries["high"].iloc[0]) if "high" in entries else None
    if low is None and high is None:
        return ""
    return f"Range [{'-∞' if low is None else f'{low:g}'}, {'∞' if high is None else f'{high:g}'}]."


def _explain(board: Board, evaluator: str, metric: str, m: pd.DataFrame) -> str:
    """Description, range, the clean model's value and the reference rows of one table."""
    definition = board.definition(evaluator, metric)
    description = definition.get("description", "").rstrip(".")
    parts = [f"{description}." if description else "", _range(m)]
    clean = m[(m["defense"] == CLEAN) & (m["attack"] == CLEAN)]
    if len(clean):
        parts.append(f"Clean model (defense {CLEAN}, attack {CLEAN}): {clean['value'].iloc[0]:.3f}.")
    refs = definition.get("references", [])
    if refs:
        parts.append(f"Reference rows: {', '.join(refs)} (mean over defenses).")
    if m["role"].iloc[0] == DIAGNOSTIC:
        parts.append(DIAGNOSTIC_NOTE)
    return " ".join(p for p in parts if p)


DIAGNOSTIC_NOTE = ("Diagnostic: it describes the models, it does not rank the defenses, so no entry is marked "
                   "best; read it next to the utility tables.")


def reference_metrics(board: Board) -> set[tuple[str, str]]:
    """(evaluator, metric) pairs shown as reference rows of another metric's table."""
    return {(key.split("/", 1)[0], ref) for key, d in board.metrics.items() for ref in d.get("references", [])}


def adaptive_attacks(board: Board) -> dict[str, tuple[str, str]]:
    """Attack column -> (``adaptive_to``, ``extends``) of every adaptive attack on the board."""
    e = board.entries
    if "adaptive_to" not in e:
        return {}
    rows = e[e["adaptive_to"].notna()].drop_duplicates("attack")
    return {r["attack"]: (r["adaptive_to"], r["extends"] if isinstance(r["extends"], str) else "")
            for _, r in rows.iterrows()}


def metric_tables(board: Board) -> list[MetricTable]:
    """One table per (data set, model, evaluator, metric), with its clear leads per column
    (none for a diagnostic metric, none on a smoke board); where the board holds adaptive
    attacks, their columns go to a second table of the metric (section ``ADAPTIVE``),
    after the column of each attack they extend.

    Cost metrics go to the efficiency table and reference metrics (chance, a random
    floor) become rows of the tables that cite them. A board normally holds one data set
    and one model; grouping by them anyway means a board that holds several never mixes
    their numbers.
    """
    main, adaptive_tables = [], []
    hidden = reference_metrics(board)
    adaptive = adaptive_attacks(board)
    for key, m in board.entries.groupby(["dataset", "model", "evaluator", "metric"], sort=True):
        if m.iloc[0]["role"] == COST or key[2:] in hidden:
            continue
        attacks = _clean_first(set(m["attack"]))
        plain = [a for a in attacks if a not in adaptive]
        if plain:
            main.append(_metric_table(board, key, m, plain))
        if len(plain) < len(attacks):
            extended = sorted({adaptive[a][1] for a in attacks if a in adaptive} & set(plain))
            adaptive_tables.append(_metric_table(board, key, m, extended + [a for a in attacks if a in adaptive],
                                                 section=ADAPTIVE))
    return main + adaptive_tables


def _metric_table(board: Board, key: tuple[str, str, str, str], m: pd.DataFrame, attacks: list[str],
                  section: str = "") -> MetricTable:
    """The table of one metric's entries ``m`` over the attack columns ``attacks``."""
    dataset, model, evaluator, metric = key
    m = m[m["attack"].isin(attacks)]
    first = m.iloc[0]
    table = MetricTable(dataset, model, evaluator, metric, first["direction"], first["role"],
                        _clean_first(set(m["defense"])), attacks,
                        {(r["defense"], r["attack"]): r for _, r in m.iterrows()},
                        description=_explain(board, evaluator, metric, m), section=section)
    e = board.entries
    for ref in board.definition(evaluator, metric).get("references", []):
        rows = e[(e["dataset"] == dataset) & (e["model"] == model) & (e["evaluator"] == evaluator)
                 & (e["metric"] == ref)]
        if len(rows):
            table.references[ref] = rows.groupby("attack")["value"].mean().to_dict()
    ranked = board.ranks and first["role"] != DIAGNOSTIC
    for attack, column in m.groupby("attack") if ranked else ():
        best = clear_best(column, first["direction"] == "higher")
        if best is not None:
            table.best.add((column.loc[best, "defense"], attack))
    return table


def adaptive_note(board: Board) -> str:
    """What the adaptive section holds: each adaptive attack, what it knows, what it extends."""
    described = [f"{attack} (written knowing {to}{f'; the budget of {extends}' if extends else ''})"
                 for attack, (to, extends) in sorted(adaptive_attacks(board).items())]
    return ("Adaptive attacks: attacks written knowing a kind of defense, each table beside the attack whose "
            f"budget it keeps, so a defense is read against the attacks that know it: {'; '.join(described)}.")


@dataclass
class CostTable:
    """Training cost per defense: each cost metric's mean over the defense's cells."""

    dataset: str
    model: str
    metrics: list[tuple[str, str]]  # (evaluator, metric)
    defenses: list[str]
    values: dict[tuple[str, tuple[str, str]], float]  # (defense, metric) -> mean


def cost_tables(board: Board) -> list[CostTable]:
    """The efficiency table(s): one per (data set, model) with cost metrics."""
    e = board.entries
    cost = e[e["role"] == COST]
    tables = []
    for (dataset, model), c in cost.groupby(["dataset", "model"], sort=True):
        means = c.groupby(["defense", "evaluator", "metric"])["value"].mean()
        tables.append(CostTable(dataset, model, sorted({(ev, m) for _, ev, m in means.index}),
                                _clean_first(set(c["defense"])),
                                {(d, (ev, m)): float(v) for (d, ev, m), v in means.items()}))
    return tables


def heading_note(t: MetricTable) -> str:
    """What a table's heading says about reading it: the direction, or that it ranks nothing."""
    return "diagnostic, not ranked" if t.role == DIAGNOSTIC else f"{t.direction} is better"


def _marks(entry: pd.Series) -> str:
    seen = SEEN_MARK if entry.get("seen_in_training") is True else ""
    return seen + (SUBMITTED_MARK if entry.get("source") == "submitted" else "")


def fmt_value(entry: pd.Series) -> str:
    text = f"{entry['value']:.3f} ± {entry['std']:.3f}" if entry["n_seeds"] > 1 else f"{entry['value']:.3f}"
    return text + _marks(entry)


def fmt_cost(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def describe(board: Board) -> str:
    """The one-paragraph header every view starts with."""
    e = board.entries
    best = (f"Bold: the best entry of a column, marked only where it lies outside the runner-up's 95% "
            f"bootstrap interval over seeds, and never on a diagnostic metric. " if board.ranks else
            f"The {SMOKE} preset is the test size: its numbers check the pipeline and rank nothing, so no "
            f"entry is marked best. ")
    return (f"Preset {board.preset}; protocol {board.protocol}; data set(s): "
            f"{', '.join(sorted(set(e['dataset'])))}; model(s): {', '.join(sorted(set(e['model'])))}. "
            f"Mean ± std over seeds (n = {', '.join(map(str, sorted(set(e['n_seeds']))))}). {best}"
            f"{SEEN_MARK}: the defense trained against this attack (seen in training); every other attacked "
            f"column is an attack it never saw, a generalisation test. "
            f"{SUBMITTED_MARK}: submitted by others, not re-run here.")


COST_NOTE = ("Training cost per defense, mean over its cells (every attack column's model; columns that "
             "share one model count it once each). Wall-clock seconds on the machine that trained the "
             "model: comparable within this board, not across hardware.")


def md_escape(text: object) -> str:
    """Plugin names and params are data from strangers: no raw HTML, no Markdown syntax
    that links or formats, no ``|`` that would split a table cell, one line."""
    out = html.escape(" ".join(str(text).split()), quote=False)
    for char in "\\`*[]|":
        out = out.replace(char, "\\" + char)
    return out


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """Rows are already escaped (values and marks); ``head`` is escaped here."""
    return ["| " + " | ".join(md_escape(h) for h in head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def markdown(board: Board) -> str:
    """Per metric: defense rows x attack columns, mean ± std over seeds, clear leads in bold;
    then the efficiency table."""
    lines = [f"# {md_escape(board.track)} leaderboard", "", md_escape(describe(board)), ""]
    tables = metric_tables(board)
    costs = cost_tables(board)
    several = len({(t.dataset, t.model) for t in [*tables, *costs]}) > 1
    for i, t in enumerate(tables):
        where = f" on {t.dataset} / {t.model}" if several else ""
        if t.section == ADAPTIVE and (i == 0 or tables[i - 1].section != ADAPTIVE):
            lines += ["## Adaptive attacks", "", md_escape(adaptive_note(board)), ""]
        level = "###" if t.section == ADAPTIVE else "##"
        lines += [md_escape(f"{level} {metric_label(t.evaluator, t.metric)}{where} ({heading_note(t)})"), ""]
        if t.description:
            lines += [md_escape(t.description), ""]
        rows = []
        for defense in t.defenses:
            cells = [md_escape(defense)]
            for attack in t.attacks:
                entry = t.cells.get((defense, attack))
                text = "–" if entry is None else md_escape(fmt_value(entry))
                cells.append(f"**{text}**" if (defense, attack) in t.best else text)
            rows.append(cells)
        for ref, by_attack in t.references.items():
            rows.append([f"_{md_escape(ref)} (reference)_",
                         *(f"_{by_attack[a]:.3f}_" if a in by_attack else "–" for a in t.attacks)])
        lines += _md_table(["defense", *t.attacks], rows)
    for c in costs:
        where = f" on {c.dataset} / {c.model}" if several else ""
        lines += [md_escape(f"## Efficiency: training cost{where} (lower is better)"), "", md_escape(COST_NOTE), ""]
        rows = [[md_escape(d), *(fmt_cost(c.values[d, m]) if (d, m) in c.values else "–" for m in c.metrics)]
                for d in c.defenses]
        lines += _md_table(["defense", *(f"{ev} / {m}" for ev, m in c.metrics)], rows)
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


def write_board(board: Board, out: Path, writers: dict[str, Writer] | None = None,
                failures: list[str] | None = None) -> list[Path]:
    """Write one board into ``out`` with every writer; return the paths written.

    A writer that raises (a plugin's bug, or the JSON writer refusing an invalid board)
    does not stop the others: its failure becomes one line in ``failures``. Without a
    ``failures`` list, the first failure is raised after every writer has run.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths, failed = [], []
    for name, writer in (writers or BUILTIN_WRITERS).items():
        try:
            paths += writer(board, out)
        except Exception as exc:  # noqa: BLE001 - isolated: the other views still get written
            failed.append(f"{board.track}: leaderboard writer '{name}' failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500])
    if failures is None and failed:
        raise ConfigError(failed[0])
    (failures if failures is not None else []).extend(failed)
    return paths


def write_boards(boards: list[Board], out_dir: str | Path, writers: dict[str, Writer] | None = None,
                 failures: list[str] | None = None) -> list[Path]:
    """Write every board under ``out_dir/<track>/`` with every writer (see ``write_board``)."""
    tracks = [b.track for b in boards]
    dup = next((t for t in tracks if tracks.count(t) > 1), None)
    if dup:
        raise ConfigError(f"the store mixes protocols or presets for track '{dup}' ("
                          f"{', '.join(f'{b.protocol} {b.preset}' for b in boards if b.track == dup)}); "
                          f"use one store per protocol and preset (--store)")
    collected: list[str] = []
    paths = [p for board in boards for p in write_board(board, Path(out_dir) / board.track, writers, collected)]
    if failures is None and collected:
        raise ConfigError(collected[0])
    (failures if failures is not None else []).extend(collected)
    return paths


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
    problems += _interval_problems(where, entry)
    problems += _range_problems(where, entry)
    return problems


def _interval_problems(where: str, entry: dict[str, Any]) -> list[str]:
    """The bootstrap interval of the mean: present from two seeds on, ordered, and inside
    [min, max] of the seed values (every resampled mean is)."""
    low, high, values = entry["ci_low"], entry["ci_high"], entry["seed_values"]
    if (low is None) != (high is None) or (low is not None and low > high):
        return [f"{where}: bad 95% interval [{low}, {high}]"]
    if low is None:
        return [] if len(values) == 1 else [f"{where}: {len(values)} seeds but no 95% interval"]
    if len(values) == 1:
        return [f"{where}: a 95% interval [{low}, {high}] from one seed"]
    if low < min(values) and not _close(low, min(values)) or high > max(values) and not _close(high, max(values)):
        return [f"{where}: 95% interval [{low}, {high}] reaches outside the seed values "
                f"[{min(values)}, {max(values)}]"]
    return []


def _range_problems(where: str, entry: dict[str, Any]) -> list[str]:
    """Every number within the metric's declared range (an ASR of 2.0 is a bug, not a result)."""
    low, high = entry["low"], entry["high"]
    if low is not None and high is not None and low > high:
        return [f"{where}: range [{low}, {high}] is empty"]
    numbers = [("value", entry["value"]), *((f"seed_values/{i}", v) for i, v in enumerate(entry["seed_values"]))]

    def outside(v: float) -> bool:
        return (low is not None and v < low and not _close(v, low)) or (
            high is not None and v > high and not _close(v, high))

    return [f"{where}/{name}: {v} is outside the metric's range [{low}, {high}]"
            for name, v in numbers if outside(v)][:1]  # the first says it; the rest repeat it


def _metric_definitions(data: dict[str, Any]) -> dict[tuple[str, str], tuple]:
    """(evaluator, metric) -> (direction, role, formula version, range) of the first entry."""
    defs: dict[tuple[str, str], tuple] = {}
    for e in data["entries"]:
        defs.setdefault((e["evaluator"], e["metric"]),
                        (e["direction"], e["role"], e["formula_version"], [e["low"], e["high"]]))
    return defs


def _against_problems(data: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """Why ``data``'s entries cannot sit on the reference board ``ref``, one line each."""
    problems = []
    if data["track"] != ref["track"]:
        problems.append(f"track '{data['track']}' differs from the reference's '{ref['track']}'")
    if data["preset"] != ref["preset"]:
        problems.append(f"preset '{data['preset']}' differs from the reference's '{ref['preset']}'")
    if data["protocol"] != ref["protocol"]:
        problems.append(f"protocol {data['protocol']} differs from the reference's {ref['protocol']} "
                        f"(different task version or task params: the numbers are not comparable)")
    ref_datasets = {e["dataset"] for e in ref["entries"]}
    for dataset in sorted({e["dataset"] for e in data["entries"]} - ref_datasets):
        problems.append(f"data set '{dataset}' is not the reference's ({', '.join(sorted(ref_datasets))})")
    ref_defs = _metric_definitions(ref)
    for (evaluator, metric), got_def in _metric_definitions(data).items():
        want = ref_defs.get((evaluator, metric))
        if want is None:
            continue  # a new metric is a new column, not a conflict
        for what, got, expected in zip(("direction", "role", "formula version", "range"), got_def, want):
            if got != expected:
                problems.append(f"{evaluator}/{metric}: {what} {got!r} differs from the "
                                f"reference's {expected!r}")
    return problems


MAX_DEPTH = 32  # a board is 5 levels deep plus its components' params


def _too_deep(data: Any) -> bool:
    """Deeper than ``MAX_DEPTH``? Iterative, so a hostile file cannot exhaust the stack
    here or in the schema check, pandas and the writers after it."""
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return False


def _schema_problems(data: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    return [f"{'/'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}"
            for err in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))]


def validate_board(data: Any, against: dict[str, Any] | None = None) -> list[str]:
    """Problems with a leaderboard JSON, one line each; ``[]`` if valid.

    Checks the published schema (which pins the schema version), then each entry
    (finite numbers, mean/std consistent with the per-seed values, the board's protocol,
    no duplicates, one direction per metric), then, with ``against``, that the entries
    could sit on that reference board (same track, protocol and data sets; the same
    direction, role and formula for every metric both boards have).
    """
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        return [f"schema_version {version}: this benchbench reads version {SCHEMA_VERSION} boards; "
                f"regenerate the board with `benchbench leaderboard` (or ask its author to)"]
    if _too_deep(data):
        return [f"<root>: nested more than {MAX_DEPTH} levels deep; no leaderboard is (params included)"]
    problems = _schema_problems(data)
    if problems:
        return problems
    seen: set[tuple] = set()
    for i, entry in enumerate(data["entries"]):
        problems += _entry_problems(i, entry, data)
        key = tuple(entry[k] for k in KEY_COLUMNS)
        if key in seen:
            problems.append(f"entries/{i}: duplicate entry for {dict(zip(KEY_COLUMNS, key))}")
        seen.add(key)
    for what in ("direction", "range"):
        seen_as: dict[tuple[str, str], set[str]] = {}
        for e in data["entries"]:
            got = e["direction"] if what == "direction" else f"[{e['low']}, {e['high']}]"
            seen_as.setdefault((e["evaluator"], e["metric"]), set()).add(got)
        problems += [f"{ev}/{metric}: entries disagree on the {what} ({' vs '.join(sorted(d))})"
                     for (ev, metric), d in seen_as.items() if len(d) > 1]
    if against is not None and not problems:
        ref_problems = validate_board(against)
        if ref_problems:
            return [f"reference board: {p}" for p in ref_problems]
        problems += _against_problems(data, against)
    return problems
