"""docs/writing-a-plugin.md runs as written.

Its fenced blocks that name a file (```python bb_loss_filter.py) are extracted into a
package, which is pip-installed with ``--target`` (never into the shared venv) and then
used as its author would: `benchbench plugins`, the package's own pytest suite (through
the installed pytest plugin, no conftest), and its run-grid.sh (grid, then leaderboard).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from benchbench import DISTRIBUTION
from benchbench.config import GridConfig, expand
from benchbench.registry import load_registry
from benchbench.testing import check_component, check_component_runs
from tests.conftest import ROOT, run_cli

DOC = ROOT / "docs" / "writing-a-plugin.md"
FILE_BLOCK = re.compile(r"^```\w+ (\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
FILES = {"pyproject.toml", "bb_loss_filter.py", "tests/test_loss_filter.py", "grid.yaml", "run-grid.sh",
         "bb_noise_training.py"}


def doc_files() -> dict[str, str]:
    return dict(FILE_BLOCK.findall(DOC.read_text()))


def write_package(root: Path) -> Path:
    for name, text in doc_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_doc_holds_a_small_complete_plugin(tmp_path):
    files = doc_files()
    assert set(files) == FILES
    assert len(files["bb_loss_filter.py"].splitlines()) < 100
    entry_points = tomllib.loads(files["pyproject.toml"])["project"]["entry-points"]["benchbench"]
    assert entry_points == {"loss-filter": "bb_loss_filter"}

    module = write_package(tmp_path) / "bb_loss_filter.py"
    registry = load_registry([str(module)])
    assert not registry.failures, registry.failures
    check_component(registry.get("defense", "clip", "loss-filter"))
    config = GridConfig(**yaml.safe_load(files["grid.yaml"]))
    assert {c.defense.name for c in expand(config, registry, preset="smoke")} == {"none", "loss-filter"}


def test_the_docs_reid_defense_is_complete_and_runs(tmp_path):
    module = write_package(tmp_path) / "bb_noise_training.py"
    registry = load_registry([str(module)])
    assert not registry.failures, registry.failures
    result = check_component_runs(registry.get("defense", "reid", "noise-training"), registry=registry)
    assert result["metrics"]["reid-rank"]["mAP"]["value"] >= 0


def test_the_guides_dependency_resolves_to_this_project(tmp_path):
    """The example depends on the distribution name (benchbench-robust; "benchbench" on the
    package index is another project): pip resolves it to this checkout, offline."""
    pkg = write_package(tmp_path / "bb-loss-filter")
    assert tomllib.loads(doc_files()["pyproject.toml"])["project"]["dependencies"] == [DISTRIBUTION]
    plan = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
                           "--report", str(tmp_path / "report.json"), str(pkg)], capture_output=True, text=True,
                          timeout=300)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"Requirement already satisfied: {DISTRIBUTION}" in plan.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert [item["metadata"]["name"] for item in report["install"]] == ["bb-loss-filter"]


@pytest.mark.slow
def test_the_doc_plugin_installs_tests_itself_and_reaches_the_leaderboard(tmp_path):
    pkg, site = write_package(tmp_path / "bb-loss-filter"), tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(pkg)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site), "BENCHBENCH_BUILTIN_ONLY": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    listed = run_cli("plugins", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "bb-loss-filter 0.1.0" in next(line for line in listed.stdout.splitlines()
                                          if line.split("\t")[:3] == ["clip", "defense", "loss-filter"])

    # the author's `pytest`, in the package; its own temp root so it never prunes ours
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "--basetemp", str(tmp_path / "author-tmp")],
                           cwd=pkg, env=env, capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout

    grid = subprocess.run(["bash", "-e", "run-grid.sh"], cwd=pkg, env=env, capture_output=True, text=True,
                          timeout=900)
    assert grid.returncode == 0, grid.stdout + grid.stderr
    board = json.loads((pkg / "boards" / "clip" / "leaderboard.json").read_text())
    mine = [e for e in board["entries"] if e["defense"] == "loss-filter"]
    assert {e["provenance"]["defense"] for e in mine} == {"loss-filter@1 (bb-loss-filter 0.1.0)"}
    assert {(e["attack"], e["evaluator"], e["metric"], e["role"]) for e in mine} >= {
        ("none", "zero-shot", "top1", "utility"), ("badnets", "asr", "asr", "robustness")}
    assert "| loss-filter |" in (pkg / "boards" / "clip" / "leaderboard.md").read_text()
    assert list((pkg / "boards" / "clip").glob("pareto-*-vs-asr.svg"))
