"""Merging others' boards: validated, provenance kept, marked submitted, views rewritten,
and kept when the board is regenerated from our store."""
import json

import pytest

from benchbench.errors import ConfigError
from benchbench.grid import run_grid
from benchbench.leaderboard import Board, build_boards, validate_board, write_board, write_json
from benchbench.merge import carry_submissions, check_submission, merge_submission
from benchbench.registry import load_registry
from tests.conftest import TOY, run_cli

MEDIAN_PLUGIN = '''
import benchbench
from benchbench.api import Defense

__version__ = "2.1"


class Median(Defense):
    name = "median"
    track = "toy"
    description = "median instead of mean"

    def fit(self, xs):
        return sorted(xs)[len(xs) // 2]


@benchbench.hookimpl
def benchbench_defenses():
    return [Median]
'''
GRID = "track: toy\n{task}attacks: [none, shift]\ndefenses: [{defenses}]\nevaluators: [error]\nseeds: 2\n"


def _board_json(tmp_path, name, defenses, plugins=(TOY,), task=""):
    """Run a toy grid in its own store and publish its JSON under tmp_path/name/toy/."""
    config = tmp_path / f"{name}.yaml"
    config.write_text(GRID.format(defenses=defenses, task=task))
    run_grid(config, tmp_path / f"{name}.sqlite", tmp_path / f"{name}-cache",
             registry=load_registry(list(plugins), entry_points=False), progress=False)
    (board,) = build_boards(tmp_path / f"{name}.sqlite")
    out = tmp_path / name / "toy"
    out.mkdir(parents=True)
    write_json(board, out)
    return out / "leaderboard.json"


@pytest.fixture
def boards(tmp_path):
    plugin = tmp_path / "median_plugin.py"
    plugin.write_text(MEDIAN_PLUGIN)
    ours = _board_json(tmp_path, "ours", "none, clamp")
    theirs = _board_json(tmp_path, "theirs", "median", plugins=(TOY, str(plugin)))
    return ours, theirs


def test_merge_cli_adds_submitted_entries_and_rewrites_the_views(boards, tmp_path):
    ours, theirs = boards
    r = run_cli("merge", str(theirs), "--into", str(ours))
    assert r.returncode == 0, r.stderr
    assert "merged 4 submitted entries" in r.stdout
    merged = json.loads(ours.read_text())
    submitted = [e for e in merged["entries"] if e["source"] == "submitted"]
    assert len(merged["entries"]) == 8 + 4 and {e["defense"] for e in submitted} == {"median"}
    assert submitted[0]["provenance"]["defense"] == "median@1 (local 2.1)"  # their provenance, kept
    assert validate_board(merged) == []
    views = ours.parent
    assert "| median | " in (views / "leaderboard.md").read_text() and "‡" in (views / "leaderboard.md").read_text()
    assert ",median,shift,error,score," in (views / "leaderboard.csv").read_text()
    assert "median@1 (local 2.1)" in (views / "index.html").read_text()

    twice = check_submission(merged, json.loads(theirs.read_text()))
    assert len(twice) == 4 and all("is already on the board" in p for p in twice)

    # regenerating the board from our store keeps the submitted entries
    r = run_cli("leaderboard", "--store", str(tmp_path / "ours.sqlite"), "--out", str(tmp_path / "ours"))
    assert r.returncode == 0, r.stderr
    again = json.loads(ours.read_text())
    assert sorted(e["defense"] for e in again["entries"] if e["source"] == "submitted") == ["median"] * 4
    assert len(again["entries"]) == 12


def test_merge_refuses_an_incomparable_submission(boards, tmp_path):
    ours, _ = boards
    other = _board_json(tmp_path, "other", "clamp", task="task: {name: toy-task, params: {n: 30}}\n")
    problems = check_submission(json.loads(ours.read_text()), json.loads(other.read_text()))
    assert len(problems) == 2
    assert problems[0].startswith("protocol toy-task@1#") and "not comparable" in problems[0]
    assert problems[1] == "data set 'toy30' is not the reference's (toy50)"
    before = ours.read_text()
    r = run_cli("merge", str(other), "--into", str(ours))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 2
    assert ours.read_text() == before
    with pytest.raises(ConfigError, match="submission rejected"):
        merge_submission(json.loads(ours.read_text()), json.loads(other.read_text()))
    r = run_cli("merge", str(other), "--into", str(tmp_path / "board.json"))
    assert r.returncode == 2 and "expected a board's leaderboard.json" in r.stderr


def test_regenerating_a_board_keeps_or_reports_its_submissions(boards, tmp_path):
    ours, theirs = boards
    merged = merge_submission(json.loads(ours.read_text()), json.loads(theirs.read_text()))
    (fresh,) = build_boards(tmp_path / "ours.sqlite")
    kept, notes = carry_submissions(fresh, merged)
    assert notes == [] and (kept.entries.source == "submitted").sum() == 4
    write_board(kept, tmp_path / "kept")  # still publishable
    # an entry measured here replaces the submitted one with the same key
    as_submitted = {**merged, "entries": [{**e, "source": "submitted"} for e in merged["entries"][:1]]}
    kept, notes = carry_submissions(fresh, as_submitted)
    assert len(kept.entries) == len(fresh.entries) and notes[0].startswith("re-measured here")
    # another protocol: the old submissions cannot stay, and the user is told
    other = {**merged, "protocol": "toy-task@1#00000000",
             "entries": [{**e, "protocol_version": "toy-task@1#00000000"} for e in merged["entries"]]}
    kept, notes = carry_submissions(fresh, other)
    assert kept is fresh and notes == ["dropped 4 submitted entries of the previous board: its protocol and "
                                       f"preset toy-task@1#00000000 default are not {fresh.protocol} default"]
    assert Board.from_json(merged).to_json()["entries"] == merged["entries"]  # lossless round trip
