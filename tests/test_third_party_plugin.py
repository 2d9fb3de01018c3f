"""A plugin in its own distribution, outside the repo, installed with pip: it must show
up in `benchbench plugins` with its distribution and version and run in the grid with
no edit to benchbench."""
import json
import sqlite3
import subprocess
import sys
import textwrap

from tests.conftest import TOY, run_cli

PYPROJECT = """
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "bb-median-defense"
version = "1.2.0"

[project.entry-points.benchbench]
median = "bb_median"
"""

MODULE = """
import statistics
import benchbench
from benchbench.api import Defense

class Median(Defense):
    name = "median"
    track = "toy"
    version = "2"
    description = "median instead of mean"

    def fit(self, xs):
        return statistics.median(xs)

@benchbench.hookimpl
def benchbench_defenses():
    return [Median]
"""


def test_installed_third_party_plugin_runs_in_the_grid(tmp_path):
    pkg, site = tmp_path / "pkg", tmp_path / "site"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "bb_median.py").write_text(textwrap.dedent(MODULE))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(pkg)], check=True, capture_output=True)
    env = {"PYTHONPATH": str(site), "BENCHBENCH_BUILTIN_ONLY": "0"}

    r = run_cli("plugins", "--plugin", TOY, env=env)
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.split("\t")[:3] == ["toy", "defense", "median"])
    assert "bb-median-defense 1.2.0" in line

    config = tmp_path / "c.yaml"
    config.write_text("track: toy\nattacks: [shift]\ndefenses: [none, median]\nevaluators: [error]\n")
    store = tmp_path / "r.sqlite"
    r = run_cli("grid", str(config), "--plugin", TOY, "--store", str(store), "--cache",
                str(tmp_path / "cache"), "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    (components,) = sqlite3.connect(store).execute(
        "SELECT components_json FROM cells WHERE defense = 'median' AND status = 'ok'").fetchone()
    defense = json.loads(components)["defense"]
    assert (defense["distribution"], defense["plugin_version"], defense["version"]) == \
        ("bb-median-defense", "1.2.0", "2")
