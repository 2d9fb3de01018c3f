"""Issue 12, items 2 and 3 end to end: a grid SIGKILLed mid-training resumes each cell
from its last checkpoint with the numbers of an uninterrupted run; bf16 smoke cells of
both tracks finish on CPU; fp32 keeps every key it had."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from benchbench import checkpoint
from benchbench.cells import stable_hash
from benchbench.config import GridConfig, expand, load_config
from benchbench.errors import ConfigError
from benchbench.grid import run_grid
from benchbench.runner import Environment, run_cell
from benchbench.stages import StageCache
from benchbench.store import Store

# The child runs the real CLI; after the N-th checkpoint of the training whose label
# contains MATCH it says so in MARKER and waits to be killed.
CHILD = textwrap.dedent("""
    import pathlib, sys, time
    from benchbench import checkpoint
    from benchbench.cli import app

    marker, match, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    original, seen = checkpoint.Checkpointer.save, []

    def save(self, state):
        original(self, state)
        if match in self.what:
            seen.append(1)
            if len(seen) == count:
                pathlib.Path(marker).write_text(str(self.folder))
                time.sleep(600)

    checkpoint.Checkpointer.save = save
    sys.argv = ["benchbench", *sys.argv[4:]]
    app()
""")

GRIDS = {
    # RoCLIP re-matches from the first epoch at smoke size; 4 steps an epoch, killed in epoch 2
    "clip": ({"track": "clip", "task": {"name": "clip-poisoning", "params": {"epochs": 3}},
              "attacks": ["badnets"], "defenses": ["roclip"], "evaluators": ["zero-shot", "asr"],
              "seeds": [0]}, "roclip on badnets", 6),  # not the clean model the ASR base rate trains
    # dddefense trains its own plain reference model first (for the gate), then itself
    "reid": ({"track": "reid", "task": {"name": "reid-adversarial", "params": {"epochs": 2}},
              "attacks": ["metric-fgsm"], "defenses": ["dddefense"], "evaluators": ["reid-rank"],
              "seeds": [0]}, "reid-model: dddefense", 5),
}


def _metrics(store_path: Path) -> dict:
    with Store(store_path) as store:
        table = store.long_table()
    return {(r.defense, r.attack, r.evaluator, r.metric): r.value for r in table.itertuples()}


def _write(tmp_path: Path, name: str, grid: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("track", ["clip", "reid"])
def test_a_grid_killed_mid_training_resumes_with_the_uninterrupted_numbers(tmp_path, registry, track, monkeypatch):
    grid, training, kill_after = GRIDS[track]
    plain = run_grid(_write(tmp_path, "plain", grid), tmp_path / "plain.sqlite", tmp_path / "plain-cache",
                     preset="smoke", registry=registry, progress=False)
    assert plain.ok == 1, plain.failed

    config = _write(tmp_path, "ckpt", {**grid, "checkpoint_every": 1})
    store, cache, marker = tmp_path / "ckpt.sqlite", tmp_path / "ckpt-cache", tmp_path / "killed-at"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), training, str(kill_after), "grid",
                              str(config), "--preset", "smoke", "--store", str(store), "--cache", str(cache),
                              "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, child.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    folder = Path(marker.read_text())
    assert (folder / checkpoint.POINTER).is_file()

    loaded = []
    original = checkpoint.Checkpointer.load

    def load(self):
        state = original(self)
        loaded.append((self.what, None if state is None else state["in_epoch"] is not None))
        return state

    monkeypatch.setattr(checkpoint.Checkpointer, "load", load)
    resumed = run_grid(config, store, cache, preset="smoke", registry=registry, progress=False)
    assert resumed.ok == 1, resumed.failed
    assert [mid for what, mid in loaded if training in what] == [True]  # resumed inside an epoch
    assert _metrics(store) == _metrics(tmp_path / "plain.sqlite")
    assert not folder.exists()  # a finished model's checkpoints are deleted (keep_checkpoints: false)


def _bf16_cell(track: str, registry) -> dict:
    grid = {**GRIDS[track][0], "defenses": ["none"], "task": None, "precision": "bf16"}
    (cell,) = expand(GridConfig(**grid), registry, preset="smoke")
    return cell.to_dict()


@pytest.mark.slow
@pytest.mark.parametrize("track", ["clip", "reid"])
def test_bf16_smoke_cells_finish_on_cpu_with_finite_metrics(tmp_path, registry, track):
    result = run_cell(_bf16_cell(track, registry), Environment(cache_root=str(tmp_path), progress=False), registry)
    assert result["status"] == "ok", result["traceback"]  # the runner fails a NaN or inf metric
    assert result["components"]["task"]["precision"] == "bf16"
    assert all(m["value"] == m["value"] for values in result["metrics"].values() for m in values.values())


def test_fp32_keeps_the_keys_from_before_precision_and_bf16_changes_them(registry):
    (cell,) = expand(GridConfig(**GRIDS["reid"][0]), registry, preset="smoke")
    resolved = cell.resolve(registry)
    before = stable_hash({"components": [c.identity() for c in resolved.components()], "seed": 0, "threads": 1})
    assert cell.precision == "fp32" and resolved.key() == before
    (bf16,) = expand(GridConfig(**{**GRIDS["reid"][0], "precision": "bf16"}), registry, preset="smoke")
    assert bf16.resolve(registry).key() != before
    assert type(cell).from_dict(bf16.to_dict()) == bf16

def test_stage_keys_gain_precision_only_when_not_fp32(tmp_path):
    old_stage_key = stable_hash({"stage": "s", "threads": 1, "a": 1})
    assert StageCache(tmp_path).key("s", {"a": 1}) == old_stage_key
    assert StageCache(tmp_path, precision="bf16").key("s", {"a": 1}) != old_stage_key


@pytest.mark.parametrize("value, problem", [(0, "step count >= 1"), ("5", "checkpoint_every"),
                                            (True, "checkpoint_every"), ("each", "checkpoint_every")])
def test_a_bad_checkpoint_interval_is_one_line(tmp_path, value, problem):
    path = _write(tmp_path, "bad", {**GRIDS["clip"][0], "checkpoint_every": value})
    with pytest.raises(ConfigError, match=problem):
        load_config(path)


def test_precision_must_be_known(tmp_path):
    with pytest.raises(ConfigError, match="precision"):
        load_config(_write(tmp_path, "bad", {**GRIDS["clip"][0], "precision": "fp8"}))
