"""One cell on several processes through the launchers a cluster uses: ``torchrun`` starting
``benchbench cell``, and Ray Train (``--workers-per-cell``); rank 0 writes the stages and
checkpoints, the driver the one store row."""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import run_cli

CLIP_CELL = """
track: clip
task: clip-poisoning
attacks: [badnets]
defenses: [none]
evaluators: [zero-shot, asr]
seeds: 1
"""


REID_CELL = """
track: reid
task: reid-adversarial
attacks: [metric-fgsm]
defenses: [none]
evaluators: [reid-rank]
seeds: 1
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node N -m benchbench ARGS`` on this machine (gloo, CPU)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={_free_port()}", "-m", "benchbench", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"})


def _rows(store: Path) -> list[tuple]:
    with closing(sqlite3.connect(store)) as db:
        return db.execute("select c.key, c.status, m.evaluator, m.metric, m.value from cells c "
                          "join metrics m on m.cell_key = c.key order by m.evaluator, m.metric").fetchall()


def _processes(store: Path) -> list[int | None]:
    """Each cell's ``processes`` as its protocol records them (None: one process)."""
    with closing(sqlite3.connect(store)) as db:
        return [json.loads(c)["task"].get("processes") for (c,) in db.execute("select components_json from cells")]


def test_torchrun_trains_one_clip_cell_on_two_processes_and_stores_one_row(tmp_path):
    (tmp_path / "cell.yaml").write_text(CLIP_CELL)
    args = ("cell", "cell.yaml", "0", "--preset", "smoke", "--progress")
    two = _torchrun(*args, "--store", "two.sqlite", "--cache", "cache2", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("1 cells: 1 run") == 1  # rank 0 reports; the follower is quiet
    one = run_cli(*args, "--store", "one.sqlite", "--cache", "cache1", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    rows = _rows(tmp_path / "two.sqlite")
    assert len({key for key, *_ in rows}) == 1 and {status for _, status, *_ in rows} == {"ok"}
    assert _processes(tmp_path / "two.sqlite") == [2] and _processes(tmp_path / "one.sqlite") == [None]
    # plain CLIP on 2 processes is the 1-process training (to rounding): the same metrics
    assert [(ev, m) for *_, ev, m, _v in rows] == [(ev, m) for *_, ev, m, _v in _rows(tmp_path / "one.sqlite")]
    for (*_, v2), (*_, v1) in zip(rows, _rows(tmp_path / "one.sqlite")):
        assert v2 == pytest.approx(v1, abs=1e-6)
    # rank 0 published each stage once; the follower's scratch builds are gone
    models = [p for p in (tmp_path / "cache2" / "clip-model").iterdir() if p.is_dir()]
    assert models and all((p / "stage.json").is_file() for p in models)
    assert not list((tmp_path / "cache2").glob("*/.*-rank*"))
    again = _torchrun(*args, "--store", "two.sqlite", "--cache", "cache2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 cells: 0 run, 1 already in two.sqlite" in again.stdout
    assert _rows(tmp_path / "two.sqlite") == rows


def test_torchrun_trains_one_reid_cell_on_two_processes_and_stores_one_row(tmp_path):
    (tmp_path / "cell.yaml").write_text(REID_CELL)
    r = _torchrun("cell", "cell.yaml", "0", "--preset", "smoke", "--store", "r.sqlite", "--cache", "cache",
                  cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(tmp_path / "r.sqlite")
    assert len({key for key, *_ in rows}) == 1 and {status for _, status, *_ in rows} == {"ok"}
    assert _processes(tmp_path / "r.sqlite") == [2]
    assert all(0 <= v <= 1 for *_, v in rows) and {m for *_, m, _v in rows} >= {"mAP", "rank1"}


def test_a_cell_that_is_not_in_the_config_is_one_line(tmp_path):
    (tmp_path / "cell.yaml").write_text(CLIP_CELL)
    r = run_cli("cell", "cell.yaml", "ffff", "--preset", "smoke", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'ffff' is no cell's key or position in cell.yaml (1 cells)" in r.stderr
    assert "benchbench grid cell.yaml --dry-run" in r.stderr


@pytest.mark.slow
def test_ray_train_trains_one_clip_cell_on_two_workers_and_stores_one_row(tmp_path):
    pytest.importorskip("ray.train.torch")
    (tmp_path / "clip.yaml").write_text(CLIP_CELL)
    (tmp_path / "reid.yaml").write_text(REID_CELL)
    ray = ("--preset", "smoke", "--executor", "ray", "--workers-per-cell", "2", "--cache", "c2")
    env = {"RAY_ADDRESS": "local", "OMP_NUM_THREADS": "1"}
    for config in ("clip.yaml", "reid.yaml"):  # one store: each track's cell is one row
        r = run_cli("grid", config, *ray, "--store", "two.sqlite", cwd=tmp_path, env=env, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    one = run_cli("grid", "clip.yaml", "--preset", "smoke", "--store", "one.sqlite", "--cache", "c1", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    rows, single = _rows(tmp_path / "two.sqlite"), _rows(tmp_path / "one.sqlite")
    assert len({key for key, *_ in rows}) == 2 and {status for _, status, *_ in rows} == {"ok"}
    assert _processes(tmp_path / "two.sqlite") == [2, 2]
    clip = [r for r in rows if r[2] in ("zero-shot", "asr")]
    assert [r[2:4] for r in clip] == [r[2:4] for r in single]  # plain CLIP: the 1-process numbers
    for (*_, v2), (*_, v1) in zip(clip, single):
        assert v2 == pytest.approx(v1, abs=1e-6)


def test_workers_per_cell_needs_ray_or_torchrun(tmp_path):
    (tmp_path / "cell.yaml").write_text(CLIP_CELL)
    r = run_cli("grid", "cell.yaml", "--preset", "smoke", "--workers-per-cell", "2", cwd=tmp_path)
    assert r.returncode == 2 and "--workers-per-cell needs --executor ray" in r.stderr


def test_a_cell_planned_for_two_processes_refuses_to_run_on_one(toy_registry, tmp_path):
    from benchbench.runner import Environment, run_cell

    spec = {"track": "toy", "task": {"name": "toy-task", "params": {}}, "attack": {"name": "none", "params": {}},
            "defense": {"name": "none", "params": {}}, "evaluators": [{"name": "error", "params": {}}],
            "seed": 0, "preset": "smoke", "processes": 2}
    result = run_cell(spec, Environment(cache_root=str(tmp_path), progress=False), toy_registry)
    assert result["status"] == "failed"
    assert result["error"] == ("ConfigError: the cell is for 2 process(es) but runs on 1; launch it as its grid "
                               "was planned")
