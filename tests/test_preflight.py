"""The grid's pre-flight data check (issue #16 item 5): a bad data path or layout is one
line and exit 2 before any cell runs, with no failed row stored (it used to be stored once
per attack, defense and seed); the check runs once per distinct task, for cells still to run."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchbench.cli import app
from benchbench.errors import DataError
from benchbench.grid import run_grid
from tests.test_bad_input import one_error_line

CLIP = {"track": "clip", "attacks": ["none", "badnets"], "defenses": ["none"], "evaluators": ["zero-shot"],
        "seeds": 3}
REID = {"track": "reid", "attacks": ["none", "metric-fgsm"], "defenses": ["none"], "evaluators": ["reid-rank"],
        "seeds": 3}


def _stored_cells(store: Path) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store) as db:
        return db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]


def _msmt17_folder(root: Path) -> Path:
    """The names an MSMT17 folder has (no images needed: the layout is found by its names)."""
    for name in ("train", "test"):
        (root / name).mkdir(parents=True)
    for name in ("list_train.txt", "list_query.txt", "list_gallery.txt"):
        (root / name).write_text("")
    return root


@pytest.mark.parametrize("config, needle", [
    ({**CLIP, "task": {"name": "clip-poisoning", "params": {"data": "{tmp}/nowhere", "eval_data": "{tmp}"}}},
     "nowhere: no such file or folder"),
    ({**CLIP, "task": {"name": "clip-poisoning", "params": {"data": "{tmp}"}}}, "eval_data is required"),
    ({**CLIP, "task": {"name": "clip-poisoning", "params": {"data": "{tmp}/cc3m/{00000..00003}.tar",
                                                            "eval_data": "{tmp}"}}},
     "cc3m/00000.tar: no such shard (4 of 4 missing)"),
    ({**REID, "task": {"name": "reid-adversarial", "params": {"data_root": "{tmp}/nowhere"}}},
     "nowhere is not a folder"),
    ({**REID, "task": {"name": "reid-adversarial", "params": {"eval_data": {"data_root": "{tmp}/msmt"}}}},
     "it holds the msmt17 layout: set the task param layout: msmt17"),
])
def test_bad_data_is_one_line_before_any_cell(tmp_path, config, needle):
    _msmt17_folder(tmp_path / "msmt")
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps(config).replace("{tmp}", str(tmp_path)))
    store = tmp_path / "r.sqlite"
    result = CliRunner().invoke(app, ["grid", str(path), "--no-progress", "--preset", "smoke", "--store", str(store),
                                      "--cache", str(tmp_path / "cache")])
    one_error_line(result, needle)
    assert _stored_cells(store) == 0


def test_checked_once_per_task_and_only_for_cells_to_run(toy_registry, toy_config, tmp_path, monkeypatch):
    task = toy_registry.get("task", "toy", "toy-task")
    calls = []
    monkeypatch.setattr(task, "check_data", lambda self: calls.append(self.params.n), raising=False)
    run = lambda: run_grid(toy_config, tmp_path / "r.sqlite", tmp_path / "cache",  # noqa: E731
                           registry=toy_registry, progress=False)
    assert run().ok == 8 and calls == [50]  # 8 cells, one task: one check
    assert run().cached == 8 and calls == [50]  # nothing left to run: nothing to check

    def broken(self):
        raise DataError("my data is gone")

    monkeypatch.setattr(task, "check_data", broken)
    with pytest.raises(DataError, match="my data is gone"):
        run_grid(toy_config, tmp_path / "other.sqlite", tmp_path / "cache", registry=toy_registry, progress=False)
    assert _stored_cells(tmp_path / "other.sqlite") == 0
