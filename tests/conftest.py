"""Shared fixtures. Installed third-party plugins are kept out of the suite (only
benchbench's own entry points load), as datasette does, so results don't depend on
what else is installed in the environment; nor does the user's plugin index."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchbench.catalog import INDEX_ENV
from benchbench.checkpoint import Checkpointer
from benchbench.registry import BUILTIN_ONLY_ENV, load_registry

ROOT = Path(__file__).resolve().parent.parent
TOY = str(ROOT / "tests" / "toy_plugin.py")
os.environ[BUILTIN_ONLY_ENV] = "1"
os.environ[INDEX_ENV] = "off"  # no plugin index in the user's cache; tests that want one pass a path
os.environ.setdefault("BENCHBENCH_JOBS", "1")  # grids in tests run in-process unless they say --jobs


@pytest.fixture(scope="session")
def toy_registry():
    return load_registry([TOY], entry_points=False)


@pytest.fixture(scope="session")
def registry():
    """Every built-in plugin, loaded through its entry point like a third-party one."""
    return load_registry()


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600):
    """Run the real `benchbench` console script in a subprocess."""
    exe = Path(sys.executable).with_name("benchbench")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, cwd=cwd)


TOY_CONFIG = """
track: toy
attacks: [none, shift]
defenses: [none, clamp]
evaluators: [error]
seeds: 2
"""


@pytest.fixture
def toy_config(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(TOY_CONFIG)
    return path


class Killed(Exception):
    """Stands for the process dying right after a checkpoint."""


class DyingCheckpointer(Checkpointer):
    def __init__(self, folder, every, last: int):
        super().__init__(folder, every)
        self.last = last

    def save(self, state):
        super().save(state)
        if self.saves == self.last:
            raise Killed
