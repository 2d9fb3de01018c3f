"""Nothing a cell, a worker or an observer does stops a grid (issue #14), and two grids on
one store do not evaluate the same cells."""
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchbench.executors.local import LocalExecutor
from benchbench.grid import run_grid
from benchbench.registry import load_registry
from benchbench.store import Store
from tests.conftest import TOY


def _config(tmp_path, body: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text("track: toy\n" + textwrap.dedent(body))
    return path


def _grid(registry, config, tmp_path, **kw):
    return run_grid(config, tmp_path / "r.sqlite", tmp_path / "cache", registry=registry,
                    progress=False, **kw)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_metric_fails_its_cell_and_is_retried(toy_registry, tmp_path, value):
    config = _config(tmp_path, f"""
        attacks: [none]
        defenses: [none, clamp]
        evaluators: [{{name: nonfinite, params: {{value: {value}}}}}]
    """)
    summary = _grid(toy_registry, config, tmp_path)
    assert summary.ok == 0 and len(summary.failed) == 2
    assert f"NonFiniteMetric: evaluator 'nonfinite' returned {value} for metric 'value'" in summary.failed[0]
    with Store(tmp_path / "r.sqlite") as store:
        assert len(store.failures()) == 2 and store.long_table().empty
    again = _grid(toy_registry, config, tmp_path)  # retried, not cached, and no crash
    assert again.cached == 0 and len(again.failed) == 2


def _result(value: float) -> dict:
    return {"status": "ok", "error": None, "traceback": None, "wall_seconds": 0.1,
            "metrics": {"error": {"abs_error": {"value": value, "higher_is_better": False,
                                                "formula_version": "1"}}}}


def _cell(toy_registry, tmp_path):
    from benchbench.config import expand, load_config

    config = _config(tmp_path, "attacks: [none]\ndefenses: [none]\nevaluators: [error]\n")
    cell = expand(load_config(config), toy_registry)[0]
    return cell.resolve(toy_registry).key(), cell


def test_store_refuses_non_finite_metrics(toy_registry, tmp_path):
    from benchbench.errors import NonFiniteMetric

    key, cell = _cell(toy_registry, tmp_path)
    with Store(tmp_path / "r.sqlite") as store:
        run = store.start_run("c.yaml", "h", {}, "default", {})
        for bad in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(NonFiniteMetric, match="evaluator 'error' returned .* for metric 'abs_error'"):
                store.record(run, key, cell, _result(bad))
        assert store.cell(key) is None


def test_an_inf_stored_by_an_older_version_is_not_finished(toy_registry, tmp_path):
    key, cell = _cell(toy_registry, tmp_path)
    with Store(tmp_path / "r.sqlite") as store:
        store.record(store.start_run("c.yaml", "h", {}, "default", {}), key, cell, _result(0.5))
        assert store.finished_keys() == {key}
        store.db.execute("UPDATE metrics SET value = 9e999")  # what the old store accepted
        store.db.commit()
        assert store.finished_keys() == set()


def test_a_killed_worker_fails_only_its_cell(toy_registry, tmp_path):
    """The OOM killer SIGKILLs one of two workers: its cell is failed with the signal,
    every other cell is stored, and the grid ends normally."""
    config = _config(tmp_path, "attacks: [none]\ndefenses: [none, oom, clamp]\nevaluators: [error]\n")
    summary = _grid(toy_registry, config, tmp_path, plugins=(TOY,), executor=LocalExecutor(jobs=2))
    assert summary.ok == 2 and len(summary.failed) == 1
    assert "defense=oom" in summary.failed[0] and "WorkerDied" in summary.failed[0]
    assert "SIGKILL" in summary.failed[0]
    with Store(tmp_path / "r.sqlite") as store:
        assert {c["defense"]: c["status"] for c in store.iter_cells()} == {
            "none": "ok", "clamp": "ok", "oom": "failed"}


OBSERVER = """
import benchbench
@benchbench.hookimpl
def benchbench_cell_finished(cell, key, status, metrics, error):
    raise ValueError("observer bug")
"""


def test_a_raising_observer_is_reported_once_and_the_grid_goes_on(tmp_path, toy_config):
    observer = tmp_path / "observer.py"
    observer.write_text(OBSERVER)
    registry = load_registry([TOY, str(observer)], entry_points=False)
    toy = sys.modules["benchbench_local_toy_plugin"]
    toy.FINISHED.clear()
    summary = _grid(registry, toy_config, tmp_path)
    assert summary.ok == 8 and summary.success
    assert len(toy.FINISHED) == 8  # the other observer saw every cell
    assert summary.hook_errors == [
        f"plugin '{observer}': benchbench_cell_finished raised for 8 cell(s), first ValueError: "
        f"observer bug; results are stored, the grid went on"]
    again = _grid(registry, toy_config, tmp_path)  # cached cells notify first: still no crash
    assert again.cached == 8 and len(again.hook_errors) == 1


def _claim(db: Path, key: str, host: str, pid: int, age: float = 0.0) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?,?)", (key, host, pid, time.time() - age))


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_grid_skips_cells_another_live_grid_claimed(toy_registry, toy_config, tmp_path):
    from benchbench.config import expand, load_config

    keys = [c.resolve(toy_registry).key() for c in expand(load_config(toy_config), toy_registry)]
    db = tmp_path / "r.sqlite"
    Store(db).close()
    host = socket.gethostname()
    _claim(db, keys[0], host, os.getppid())  # alive, another process: skipped
    _claim(db, keys[1], host, _dead_pid())  # its owner died: taken over
    _claim(db, keys[2], host, os.getppid(), age=10 * 24 * 3600)  # too old: taken over
    summary = _grid(toy_registry, toy_config, tmp_path)
    assert summary.ok == 7 and summary.busy == {keys[0]: f"pid {os.getppid()} on {host}"}
    with Store(db) as store:
        assert keys[0] not in store.finished_keys()
        assert [k for (k,) in store.db.execute("SELECT key FROM claims")] == [keys[0]]  # ours released


def test_ctrl_c_says_how_to_resume_and_keeps_finished_cells(tmp_path):
    config = _config(tmp_path, """
        task: {name: toy-task, params: {sleep: 0.5}}
        attacks: [none, shift]
        defenses: [none, clamp]
        evaluators: [error]
        seeds: 2
    """)
    store, log = tmp_path / "r.sqlite", tmp_path / "finished.log"
    args = [sys.executable, "-m", "benchbench.cli", "grid", str(config), "--plugin", TOY,
            "--store", str(store), "--cache", str(tmp_path / "cache"), "--no-progress"]
    env = {**os.environ, "TOY_FINISHED_LOG": str(log)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().split()) < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: re-run the same command to resume" in err and "Traceback" not in err
    db = sqlite3.connect(store)
    assert 2 <= db.execute("SELECT COUNT(*) FROM cells WHERE status = 'ok'").fetchone()[0] < 8
    assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
