"""Boards that refuse impossible numbers, escape what strangers named, survive a broken
writer, and explain themselves (seen attacks, ranges and reference rows, training cost)."""
from __future__ import annotations

import copy
import json
import re

import pandas as pd
import pytest

from benchbench.grid import run_grid
from benchbench.leaderboard import (BUILTIN_WRITERS, SEEN_MARK, Board, build_boards, markdown, validate_board,
                                    write_board, write_boards)
from benchbench.merge import check_submission
from benchbench.registry import load_registry
from benchbench.site import render
from tests.conftest import TOY, run_cli

PLUGIN = '''
import benchbench
from benchbench.api import RATE, DataAttack, Defense, Evaluator, Metric


class Nudge(DataAttack):
    name = "nudge"
    track = "toy"
    description = "shifts every number by just under the clamp bound"
    adaptive_to = "clamping (clamp, hardened)"
    extends = "shift"

    def poison(self, xs, seed):
        return [x + 0.9 for x in xs]


class Hardened(Defense):
    name = "hardened"
    track = "toy"
    description = "trains on shifted data (so the shift column is not a generalisation test)"

    def trained_against(self):
        return ("shift",)

    def fit(self, xs):
        return sum(min(max(x, -1.0), 1.0) for x in xs) / len(xs)


class Rate(Evaluator):
    name = "rate"
    track = "toy"
    description = "a rate, and what it is read against"
    metrics = (Metric("hit", True, "a fraction", references=("floor",), **RATE),
               Metric("floor", True, "what guessing scores", **RATE),
               Metric("seconds", False, "what training took", role="cost", low=0.0))

    def evaluate(self, mean, seed):
        return {"hit": min(1.0, abs(mean)), "floor": 0.25, "seconds": 1.0 + seed}


class Broken(Evaluator):
    name = "broken"
    track = "toy"
    description = "reports a rate of 2"
    metrics = (Metric("asr", False, "a rate", **RATE),)

    def evaluate(self, mean, seed):
        return {"asr": 2.0}


@benchbench.hookimpl
def benchbench_attacks():
    return [Nudge]


@benchbench.hookimpl
def benchbench_defenses():
    return [Hardened]


@benchbench.hookimpl
def benchbench_evaluators():
    return [Rate, Broken]
'''
GRID = "track: toy\nattacks: [{attacks}]\ndefenses: [none, hardened]\nevaluators: [{evaluators}]\nseeds: 2\n"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "board_plugin.py"
    path.write_text(PLUGIN)
    return path


def _grid(tmp_path, plugin, evaluators="error, rate", attacks="none, shift"):
    config = tmp_path / "c.yaml"
    config.write_text(GRID.format(evaluators=evaluators, attacks=attacks))
    registry = load_registry([TOY, str(plugin)], entry_points=False)
    summary = run_grid(config, tmp_path / "r.sqlite", tmp_path / "cache", registry=registry, progress=False)
    return summary, tmp_path / "r.sqlite"


@pytest.fixture(scope="module")
def board(tmp_path_factory, plugin):
    _, store = _grid(tmp_path_factory.mktemp("grid"), plugin)
    (board,) = build_boards(store)
    return board


@pytest.fixture
def published(board):
    return copy.deepcopy(board.to_json())


def _problems(data, edit):
    bad = copy.deepcopy(data)
    edit(bad)
    return validate_board(bad)


def _set(entry, values):
    """Give an entry per-seed values with a consistent mean, std and interval."""
    mean = sum(values) / len(values)
    entry.update(seed_values=values, value=mean, std=float(pd.Series(values).std()),
                 ci_low=min(values), ci_high=max(values))


def _rate_entry(data):
    return next(i for i, e in enumerate(data["entries"]) if e["metric"] == "hit")


# -- impossible numbers ---------------------------------------------------------------

def test_entries_carry_their_metric_range(published):
    assert validate_board(published) == []
    hit = published["entries"][_rate_entry(published)]
    assert (hit["low"], hit["high"]) == (0.0, 1.0)
    score = next(e for e in published["entries"] if e["metric"] == "score")
    assert (score["low"], score["high"]) == (None, None)  # undeclared: unbounded


@pytest.mark.parametrize("values", [[2.0, 2.0], [-0.4, -0.4], [0.5, 1.5]])
def test_values_outside_the_declared_range_are_rejected(published, values):
    i = _rate_entry(published)
    problems = _problems(published, lambda d: _set(d["entries"][i], values))
    assert len(problems) == 1 and "outside the metric's range [0.0, 1.0]" in problems[0]


def test_intervals_must_lie_within_the_seed_values(published):
    i = _rate_entry(published)
    assert any("reaches outside the seed values" in p
               for p in _problems(published, lambda d: d["entries"][i].update(ci_low=-5.0, ci_high=5.0)))
    assert any("no 95% interval" in p
               for p in _problems(published, lambda d: d["entries"][i].update(ci_low=None, ci_high=None)))


def test_duplicate_seeds_nulls_in_provenance_and_an_empty_board_are_rejected(published):
    i = _rate_entry(published)
    assert any("has non-unique elements" in p
               for p in _problems(published, lambda d: d["entries"][i].update(seeds=[0, 0])))
    for field in ("defense", "host", "git_commit", "versions", "wall_seconds_mean"):
        problems = _problems(published, lambda d: d["entries"][i]["provenance"].update({field: None}))
        assert any(p.startswith(f"entries/{i}/provenance/{field}: None is not of type") for p in problems), field
    assert _problems(published, lambda d: d.update(entries=[])) == ["entries: [] should be non-empty"]


def test_a_metric_range_must_agree_across_entries_and_with_the_reference(published):
    i = _rate_entry(published)
    assert any("rate/hit: entries disagree on the range" in p
               for p in _problems(published, lambda d: d["entries"][i].update(high=100.0)))
    widened = copy.deepcopy(published)
    for e in widened["entries"]:
        if e["metric"] == "hit":
            e["high"] = 100.0
    assert validate_board(widened) == []
    assert validate_board(widened, against=published) == [
        "rate/hit: range [0.0, 100.0] differs from the reference's [0.0, 1.0]"]


def test_a_submission_with_an_impossible_rate_is_not_merged(published, tmp_path):
    sub = copy.deepcopy(published)
    sub["entries"] = [e for e in sub["entries"] if e["defense"] == "hardened"]
    ours = {**published, "entries": [e for e in published["entries"] if e["defense"] != "hardened"]}
    assert check_submission(ours, sub) == []
    i = _rate_entry(sub)
    _set(sub["entries"][i], [-3.0, -3.0])
    (problem,) = check_submission(ours, sub)
    assert "outside the metric's range" in problem
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "leaderboard.json").write_text(json.dumps(ours))
    (tmp_path / "sub.json").write_text(json.dumps(sub))
    r = run_cli("merge", str(tmp_path / "sub.json"), "--into", str(tmp_path / "ours" / "leaderboard.json"))
    assert r.returncode == 1 and "outside the metric's range" in r.stderr
    assert not (tmp_path / "ours" / "leaderboard.md").exists()  # nothing rewritten, nothing shown bold


def test_a_deeply_nested_file_is_one_line_not_a_recursion_error(published, tmp_path):
    deep = copy.deepcopy(published)
    nested: dict = {}
    deep["entries"][0]["provenance"]["defense_params"] = nested
    for _ in range(100):
        nested["x"] = {}
        nested = nested["x"]
    assert validate_board(deep) == ["<root>: nested more than 32 levels deep; no leaderboard is (params included)"]
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)  # deeper than json.loads can recurse
    r = run_cli("validate", str(path))
    assert r.returncode == 2 and "RecursionError" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "nested too deeply" in r.stderr


def test_an_evaluator_reporting_outside_its_range_fails_its_cell(tmp_path, plugin):
    summary, _ = _grid(tmp_path, plugin, evaluators="broken")
    assert summary.ok == 0 and len(summary.failed) == 2 * 2 * 2  # defenses x attacks x seeds
    assert "reported asr = 2.0, outside its declared range [0.0, 1.0] (a plugin bug)" in summary.failed[0]


# -- Markdown escaping ----------------------------------------------------------------

EVIL = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "a|b", "[x](javascript:alert(1))"]


def test_markdown_escapes_names_from_plugins(board):
    e = board.entries.copy()
    names = {"none": EVIL[0], "hardened": EVIL[1]}
    e["defense"] = e["defense"].map(names)
    e["attack"] = e["attack"].map({"none": "none", "shift": EVIL[2]})
    e["dataset"] = EVIL[3]
    md = markdown(Board(board.track, board.protocol, e, board.metrics))
    assert "<script" not in md and "<img" not in md and not re.search(r"(?<!\\)\]\(", md)  # no raw tag, no link
    assert "&lt;script&gt;" in md and "&lt;img src=x onerror=alert(1)&gt;" in md and "\\[x\\](javascript" in md
    width = None
    for line in md.splitlines():  # every row of every table has its header's cell count
        if not line.startswith("|"):
            width = None
            continue
        cells = len(re.split(r"(?<!\\)\|", line))
        width = width or cells
        assert cells == width, line
    assert "| defense | none | a\\|b |" in md


# -- writers --------------------------------------------------------------------------

def test_a_failing_writer_is_reported_once_and_the_others_still_write(board, tmp_path):
    def boom(board, out):
        raise RuntimeError("disk on fire\nsecond line")

    writers = {"md": BUILTIN_WRITERS["md"], "boom": boom, "json": BUILTIN_WRITERS["json"]}
    failures: list[str] = []
    paths = write_boards([board], tmp_path, writers, failures)
    assert sorted(p.name for p in paths) == ["leaderboard.json", "leaderboard.md"]
    assert failures == ["toy: leaderboard writer 'boom' failed: RuntimeError: disk on fire"]
    with pytest.raises(Exception, match="writer 'boom' failed"):  # no list: raised after the others ran
        write_board(board, tmp_path / "again", writers)
    assert (tmp_path / "again" / "leaderboard.json").is_file()


def test_the_cli_reports_a_failing_writer_in_one_line(tmp_path, plugin):
    _, store = _grid(tmp_path, plugin)
    writer = tmp_path / "bad_writer.py"
    writer.write_text("import benchbench\n\n\n@benchbench.hookimpl\ndef benchbench_leaderboard_writers():\n"
                      "    def boom(board, out):\n        raise OSError('no space left')\n    return {'boom': boom}\n")
    r = run_cli("leaderboard", "--store", str(store), "--out", str(tmp_path / "lb"), "--plugin", str(writer))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["error: toy: leaderboard writer 'boom' failed: OSError: no space left"]
    assert {p.name for p in (tmp_path / "lb" / "toy").iterdir()} >= {"leaderboard.md", "leaderboard.json",
                                                                     "index.html"}


# -- boards that explain themselves ---------------------------------------------------

def test_attacks_a_defense_trained_against_are_marked_seen(board, published):
    e = board.entries
    seen = e[e["seen_in_training"]]
    assert set(zip(seen["defense"], seen["attack"])) == {("hardened", "shift")}
    assert seen["provenance"].iloc[0]["trained_against"] == ["shift"]
    md = markdown(board)
    row = next(line for line in md.splitlines() if line.startswith("| hardened |"))
    assert SEEN_MARK in row.split("|")[3] and SEEN_MARK not in row.split("|")[2]
    assert f"{SEEN_MARK}: the defense trained against this attack" in md
    page = render(board)
    assert f"{SEEN_MARK}: the defense trained against this attack" in page and f"{SEEN_MARK}</td>" in page
    assert [e["seen_in_training"] for e in published["entries"]].count(True) == 5  # every metric of that cell


def test_adaptive_attacks_get_their_own_section_beside_the_attack_they_extend(tmp_path, plugin):
    _, store = _grid(tmp_path, plugin, evaluators="error", attacks="none, shift, nudge")
    (board,) = build_boards(store)
    e = board.entries
    assert set(e.loc[e["attack"] == "nudge", "adaptive_to"]) == {"clamping (clamp, hardened)"}
    assert e.loc[e["attack"] != "nudge", "adaptive_to"].isna().all()
    assert validate_board(board.to_json()) == []
    md = markdown(board)
    main, adaptive = md.split("## Adaptive attacks")
    assert "nudge" not in main.split("## Efficiency")[0]
    assert "nudge (written knowing clamping (clamp, hardened); the budget of shift)" in adaptive
    assert "### error / abs_error" in adaptive and "| defense | shift | nudge |" in adaptive
    page = render(board)
    assert "<h2>Adaptive attacks</h2>" in page and "<th>shift</th><th>nudge</th>" in page
    (tmp_path / "plain").mkdir()
    (plain,) = build_boards(_grid(tmp_path / "plain", plugin, evaluators="error")[1])
    assert "Adaptive" not in markdown(plain) and "Adaptive" not in render(plain)


def test_cells_that_evaluate_one_model_twice_count_its_seed_once(tmp_path, plugin):
    config, store = tmp_path / "c.yaml", tmp_path / "r.sqlite"
    registry = load_registry([TOY, str(plugin)], entry_points=False)
    for evaluators in ("error", "error, rate"):  # two grids, two evaluator lists: other cell keys
        config.write_text(GRID.format(evaluators=evaluators, attacks="none, shift"))
        run_grid(config, store, tmp_path / "cache", registry=registry, progress=False)
    (board,) = build_boards(store)
    e = board.entries
    assert set(e["n_seeds"]) == {2} and all(s == [0, 1] for s in e["seeds"])
    assert validate_board(board.to_json()) == []


def test_two_values_of_one_entry_and_seed_are_refused():
    from benchbench.errors import ConfigError
    from benchbench.leaderboard import KEY_COLUMNS, _one_value_per_seed

    row = dict(zip(KEY_COLUMNS, ["toy", "d", "m", "none", "shift", "error", "abs_error"]), seed=0)
    df = pd.DataFrame([{**row, "value": 0.5, "cell_key": "a"}, {**row, "value": 0.7, "cell_key": "b"}])
    with pytest.raises(ConfigError, match=r"different values of error/abs_error for none under shift, seed 0 "
                                          r"\(cells a, b\).*one store per evaluator setting"):
        _one_value_per_seed(df)


def test_metric_descriptions_give_range_clean_value_and_reference_rows(board):
    md = markdown(board)
    section = md.split("## rate / hit")[1].split("##")[0]
    assert "a fraction. Range \\[0, 1\\]. Clean model (defense none, attack none):" in section
    assert "_floor (reference)_ | _0.250_ | _0.250_ |" in section
    assert "## rate / floor" not in md  # a reference is a row, not a table of its own
    page = render(board)
    assert "floor (reference)" in page and "Range [0, 1]." in page


def test_cost_metrics_form_the_efficiency_table(board):
    md = markdown(board)
    assert "## rate / seconds" not in md
    section = md.split("## Efficiency: training cost (lower is better)")[1]
    assert "| defense | rate / seconds |" in section
    assert "| none | 1.5 |" in section and "| hardened | 1.5 |" in section  # seeds 0 and 1, both columns
    assert "Training cost" in render(board)
