import copy
import json
import math

import pytest

from benchbench.grid import run_grid
from benchbench.leaderboard import build_boards, markdown, validate_board, write_boards


@pytest.fixture
def board_dir(toy_registry, toy_config, tmp_path):
    run_grid(toy_config, tmp_path / "r.sqlite", tmp_path / "cache", registry=toy_registry, progress=False)
    boards = build_boards(tmp_path / "r.sqlite")
    write_boards(boards, tmp_path / "lb")
    return tmp_path / "lb" / "toy", boards


def test_long_table_aggregates_seeds_with_direction(board_dir):
    _, (board,) = board_dir
    e = board.entries
    assert len(e) == 2 * 2 * 2  # defenses x attacks x metrics
    row = e[(e.defense == "none") & (e.attack == "none") & (e.metric == "score")].iloc[0]
    # score = -|mean| + 0.01 * seed, seeds 0 and 1 over the same clean data
    assert row.n_seeds == 2 and row.seeds == [0, 1] and row.direction == "higher"
    assert row["std"] == pytest.approx(math.sqrt(0.01 ** 2 / 2))
    assert row.provenance["defense"].startswith("none@1 (local 0.3)")


def test_markdown_marks_best_per_column_by_direction(board_dir):
    _, (board,) = board_dir
    md = markdown(board)
    section = md.split("## error / abs_error (lower is better)")[1].split("##")[0]
    e = board.entries
    sub = e[(e.metric == "abs_error") & (e.attack == "shift")]
    best = sub.loc[sub.value.idxmin()]
    assert f"| {best.defense} |" in section
    best_line = next(l for l in section.splitlines() if l.startswith(f"| {best.defense} |"))
    assert best_line.split("|")[3].strip().startswith("**")  # the shift column


def test_written_json_validates_and_validation_catches_problems(board_dir):
    out, _ = board_dir
    data = json.loads((out / "leaderboard.json").read_text())
    assert validate_board(data) == []
    assert (out / "leaderboard.csv").read_text().startswith("track,dataset,model,defense,attack")

    bad = copy.deepcopy(data)
    bad["entries"][0]["value"] = float("nan")
    assert any("not a finite number" in p for p in validate_board(bad))
    bad = copy.deepcopy(data)
    bad["entries"][0]["direction"] = "sideways"
    assert any("direction" in p for p in validate_board(bad))
    bad = copy.deepcopy(data)
    bad["entries"].append(bad["entries"][0])
    assert any("duplicate entry" in p for p in validate_board(bad))
    bad = copy.deepcopy(data)
    bad["entries"][1]["protocol_version"] = "toy-task@9#deadbeef"
    assert any("differs from the board's" in p for p in validate_board(bad))
    del bad["track"]
    assert validate_board(bad) == ["<root>: 'track' is a required property"]
