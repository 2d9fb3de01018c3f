import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from benchbench.grid import run_grid
from benchbench.store import Store
from tests.conftest import TOY


def _grid(toy_registry, config, tmp_path, **kw):
    return run_grid(config, tmp_path / "r.sqlite", tmp_path / "cache", registry=toy_registry,
                    progress=False, **kw)


def test_grid_runs_every_cell_and_shares_stages(toy_registry, toy_config, tmp_path):
    summary = _grid(toy_registry, toy_config, tmp_path)
    assert (summary.total, summary.ok, summary.cached, summary.failed) == (8, 8, 0, [])
    cache = tmp_path / "cache"
    # data once, poisoned data once per (attack, seed), model once per (attack, defense, seed)
    assert len(list((cache / "toy-data").glob("*/stage.json"))) == 1
    assert len(list((cache / "toy-poisoned").glob("*/stage.json"))) == 2 * 2
    assert len(list((cache / "toy-model").glob("*/stage.json"))) == 8
    with Store(tmp_path / "r.sqlite") as store:
        table = store.long_table()
    assert len(table) == 8 * 2
    comps = json.loads(table["components_json"].iloc[0])
    for role in ("attack", "defense"):
        assert comps[role]["distribution"] == "local" and comps[role]["plugin_version"] == "0.3"
    assert comps["evaluators"][0]["plugin"] == TOY


def test_rerun_is_all_cached(toy_registry, toy_config, tmp_path):
    _grid(toy_registry, toy_config, tmp_path)
    again = _grid(toy_registry, toy_config, tmp_path)
    assert (again.ok, again.cached) == (0, 8)


def test_failing_cell_is_stored_and_the_grid_goes_on(toy_registry, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("track: toy\nattacks: [none, shift]\ndefenses: [boom, none]\nevaluators: [error]\n")
    summary = _grid(toy_registry, config, tmp_path)
    assert summary.ok == 2 and len(summary.failed) == 2 and not summary.success
    assert "defense=boom attack=none seed=0: RuntimeError: boom inside the defense" in summary.failed[0]
    with Store(tmp_path / "r.sqlite") as store:
        failures = store.failures()
        assert {f["defense"] for f in failures} == {"boom"}
        assert "raise RuntimeError" in store.cell(failures[0]["key"])["traceback"]
    # the failed cells are retried on the next run, the finished ones are not
    again = _grid(toy_registry, config, tmp_path)
    assert again.cached == 2 and len(again.failed) == 2


def test_killed_grid_resumes_without_duplicates(tmp_path):
    config = tmp_path / "slow.yaml"
    config.write_text("track: toy\ntask: {name: toy-task, params: {sleep: 0.7}}\n"
                      "attacks: [none, shift]\ndefenses: [none, clamp]\nevaluators: [error]\nseeds: 2\n")
    store, log = tmp_path / "r.sqlite", tmp_path / "finished.log"
    args = [str(Path(sys.executable).with_name("benchbench")), "grid", str(config), "--plugin", TOY,
            "--store", str(store), "--cache", str(tmp_path / "cache"), "--no-progress", "--jobs", "1"]
    env = {"TOY_FINISHED_LOG": str(log), "PATH": "/usr/bin:/bin", "BENCHBENCH_BUILTIN_ONLY": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().split()) < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sqlite3.connect(store).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    assert 3 <= done_before < 8
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"8 cells: {8 - done_before} run, {done_before} already in" in out.stdout
    db = sqlite3.connect(store)
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM cells").fetchone() == (8, 8)
    assert db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 16


def test_process_pool_gives_the_same_results_as_in_process(toy_registry, toy_config, tmp_path):
    from benchbench.executors.local import LocalExecutor

    serial = run_grid(toy_config, tmp_path / "a.sqlite", tmp_path / "ca", registry=toy_registry,
                      progress=False)
    pooled = run_grid(toy_config, tmp_path / "b.sqlite", tmp_path / "cb", registry=toy_registry,
                      plugins=(TOY,), executor=LocalExecutor(jobs=2), progress=False)
    assert serial.ok == pooled.ok == 8

    def values(name):
        with Store(tmp_path / name) as store:
            t = store.long_table()
        return t.sort_values(["cell_key", "metric"])[["cell_key", "metric", "value"]].values.tolist()

    assert values("a.sqlite") == values("b.sqlite")
