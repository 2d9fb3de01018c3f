"""Output outside a terminal and inspecting runs: one line per cell in a log, `show`,
`grid --dry-run`, `cache du|prune` (and that prune leaves a running grid's cache alone)."""
import os
import re
import sqlite3
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from benchbench.cli import app
from benchbench.executors import local
from tests.conftest import TOY, run_cli

LINE = re.compile(r"^\[(\d+)/8\] ok \d+\.\d s (toy: defense=\w+ attack=\w+ seed=\d)$")


def _grid(config, tmp_path, *extra):
    return CliRunner().invoke(app, ["grid", str(config), "--plugin", TOY, "--preset", "smoke",
                                    "--store", str(tmp_path / "r.sqlite"), "--cache", str(tmp_path / "c"), *extra])


def test_grid_with_stdout_in_a_file_writes_one_line_per_cell(toy_config, tmp_path):
    log = tmp_path / "grid.log"
    exe = os.path.join(os.path.dirname(sys.executable), "benchbench")
    with open(log, "w") as fh:  # progress bars are on (the default), but stdout is a file
        r = subprocess.run([exe, "grid", str(toy_config), "--plugin", TOY, "--preset", "smoke",
                            "--store", str(tmp_path / "r.sqlite"), "--cache", str(tmp_path / "c")],
                           stdout=fh, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    cells = [LINE.match(line) for line in lines[:-1]]
    assert all(cells), lines
    assert [int(m.group(1)) for m in cells] == list(range(1, 9))
    assert len({m.group(2) for m in cells}) == 8  # each cell once
    assert lines[-1].startswith("8 cells: 8 run, 0 already in ")
    assert str(tmp_path / "r.sqlite") in lines[-1]  # the path is not hard-wrapped


def test_show_lists_cells_and_failed_ones_with_tracebacks(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("track: toy\nattacks: [none]\ndefenses: [none, boom]\nevaluators: [error]\n")
    assert _grid(config, tmp_path).exit_code == 1
    store = tmp_path / "r.sqlite"
    before = store.read_bytes()
    out = CliRunner().invoke(app, ["show", str(store)])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert re.match(r"^ok +\d+\.\d s  toy: defense=none attack=none seed=0  [0-9a-f]{16}$", lines[0])
    assert re.match(r"^failed +\d+\.\d s  toy: defense=boom attack=none seed=0  [0-9a-f]{16}$", lines[1])
    assert lines[2].startswith(f"2 cells in {store}: 1 ok, 1 failed,")
    out = CliRunner().invoke(app, ["show", str(store), "--failed"])
    assert out.exit_code == 0, out.output
    assert "defense=boom" in out.stdout and "defense=none" not in out.stdout
    assert "  RuntimeError: boom inside the defense" in out.stdout
    assert "    Traceback (most recent call last):" in out.stdout
    assert store.read_bytes() == before  # read-only


def test_show_a_missing_store_is_one_line_and_creates_nothing(tmp_path):
    out = CliRunner().invoke(app, ["show", str(tmp_path / "nope.sqlite")])
    assert out.exit_code == 2 and "no results store at" in out.stderr
    assert not (tmp_path / "nope.sqlite").exists()


def test_dry_run_lists_the_cells_and_what_is_stored(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("track: toy\nattacks: [none]\ndefenses: [none, boom]\nevaluators: [error]\n")
    out = _grid(config, tmp_path, "--dry-run")
    assert out.exit_code == 0, out.output
    assert not (tmp_path / "r.sqlite").exists()  # nothing written
    assert out.stdout.splitlines()[-1].startswith("2 cells: 2 to run (0 failed before), 0 already in")
    assert _grid(config, tmp_path).exit_code == 1
    config.write_text("track: toy\nattacks: [none]\ndefenses: [none, boom]\nevaluators: [error]\nseeds: 2\n")
    runs = sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT COUNT(*) FROM runs").fetchone()
    out = _grid(config, tmp_path, "--dry-run")
    assert out.exit_code == 0, out.output
    what = sorted((line.split()[0], line.split()[2]) for line in out.stdout.splitlines()[:-1])
    assert what == [("failed", "defense=boom"), ("new", "defense=boom"), ("new", "defense=none"),
                    ("stored", "defense=none")]
    assert out.stdout.splitlines()[-1].startswith("4 cells: 3 to run (1 failed before), 1 already in")
    assert sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT COUNT(*) FROM runs").fetchone() == runs


def test_cache_du_and_prune(toy_config, tmp_path):
    assert _grid(toy_config, tmp_path).exit_code == 0
    cache = str(tmp_path / "c")
    out = CliRunner().invoke(app, ["cache", "du", "--cache", cache])
    assert out.exit_code == 0, out.output
    kinds = {line.split()[0]: int(line.split()[1]) for line in out.stdout.splitlines()}
    assert kinds == {"toy-data": 1, "toy-model": 8, "toy-poisoned": 4, "total": 13}
    out = CliRunner().invoke(app, ["cache", "prune", "--cache", cache])
    assert out.exit_code == 2 and "say what to prune" in out.stderr
    out = CliRunner().invoke(app, ["cache", "prune", "--cache", cache, "--kind", "toy-model", "--dry-run"])
    assert out.exit_code == 0 and out.stdout.count("would remove ") == 9
    out = CliRunner().invoke(app, ["cache", "prune", "--cache", cache, "--kind", "toy-model"])
    assert out.exit_code == 0 and out.stdout.splitlines()[-1].startswith("removed 8 stages,")
    assert not list((tmp_path / "c" / "toy-model").iterdir())  # stages and their lock files
    out = CliRunner().invoke(app, ["cache", "du", "--cache", cache])
    assert "toy-model" not in out.stdout and "toy-poisoned" in out.stdout
    rerun = _grid(toy_config, tmp_path)  # the store has the cells: nothing is rebuilt or re-run
    assert rerun.exit_code == 0 and "0 run, 8 already in" in rerun.stdout


def test_prune_refuses_while_a_grid_uses_the_cache(tmp_path):
    cache = tmp_path / "c"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom benchbench.stages import in_use\n"
         "with in_use(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n", str(cache)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = CliRunner().invoke(app, ["cache", "prune", "--cache", str(cache), "--all"])
        assert out.exit_code == 2
        assert "in use by a running grid (" in out.stderr and f"-{holder.pid})" in out.stderr
    finally:
        holder.kill()
        holder.wait()
    out = CliRunner().invoke(app, ["cache", "prune", "--cache", str(cache), "--all"])
    assert out.exit_code == 0, out.output  # a dead grid's lock does not count
    assert not list((cache / ".running").iterdir())


def test_leaderboard_lists_each_written_file_once(toy_config, tmp_path):
    assert _grid(toy_config, tmp_path).exit_code == 0
    r = run_cli("leaderboard", "--store", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "lb"), "--plugin", TOY)
    assert r.returncode == 0, r.stderr
    wrote = [line for line in r.stdout.splitlines() if line.startswith("wrote ")]
    assert wrote and len(wrote) == len(set(wrote))
    assert all(os.path.isfile(line[len("wrote "):]) for line in wrote)


@pytest.mark.parametrize(("cores", "jobs"), [({0}, 1), ({0, 1}, 2), (set(range(64)), 2)])
def test_default_jobs(monkeypatch, cores, jobs):
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda _pid: cores, raising=False)
    assert local.default_jobs() == jobs
