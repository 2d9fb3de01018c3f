"""`benchbench plugins`: JSON and plain listings, `-v` details, and the plugin index
that lets a listing skip importing torch (benchbench.catalog)."""
import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from benchbench import catalog
from benchbench.cli import app
from benchbench.registry import load_registry
from tests.conftest import TOY, run_cli

CHOICES_PLUGIN = '''
from typing import ClassVar, Literal
from pydantic import Field
import benchbench
from benchbench.api import Defense, Params

class Pick(Defense):
    name = "pick"
    track = "toy"
    description = "a defense with a Literal param"

    class Params(Params):
        mode: Literal["mean", "median"] = Field("mean", description="which statistic")
        epochs: int = 3

    presets: ClassVar = {"smoke": {"epochs": 1}, "paper": {"epochs": 30, "mode": "median"}}

@benchbench.hookimpl
def benchbench_defenses():
    return [Pick]
'''


def _plugin(tmp_path):
    path = tmp_path / "pick_plugin.py"
    path.write_text(CHOICES_PLUGIN)
    return str(path)


def test_json_listing_parses_and_describes_params_and_presets(tmp_path):
    out = CliRunner().invoke(app, ["plugins", "--plugin", _plugin(tmp_path), "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    (pick,) = [c for c in data["components"] if c["name"] == "pick"]
    assert pick["kind"] == "defense" and pick["distribution"] == "local"
    assert pick["params"][0] == {"name": "mode", "type": "Literal['mean', 'median']", "default": "mean",
                                 "required": False, "choices": ["mean", "median"], "help": "which statistic"}
    assert pick["presets"]["paper"] == {"epochs": 30, "mode": "median"}
    assert data["failures"] == []


def test_verbose_plain_listing_shows_choices_and_what_presets_change(tmp_path):
    out = CliRunner().invoke(app, ["plugins", "--plugin", _plugin(tmp_path), "-v"])  # not a terminal: plain
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    row = lines.index(next(line for line in lines if line.startswith("toy\tdefense\tpick\t")))
    assert lines[row + 1] == '\tmode: Literal[\'mean\', \'median\'] = "mean" (one of "mean", "median")\twhich statistic'
    assert '\tpreset paper\tepochs 3 -> 30, mode "mean" -> "median"' in lines
    assert "\tpreset smoke\tepochs 3 -> 1" in lines
    assert all("\t" in line for line in lines)  # tab-separated, no table drawing


def test_a_current_index_lists_without_importing_torch(tmp_path):
    env = {catalog.INDEX_ENV: str(tmp_path / "index.json")}
    first = run_cli("plugins", "--format", "json", env=env)  # imports every plugin, writes the index
    assert first.returncode == 0, first.stderr
    second = subprocess.run([sys.executable, "-X", "importtime", "-m", "benchbench.cli", "plugins",
                             "--format", "json"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == json.loads(first.stdout)
    imported = {line.rsplit("|", 1)[-1].strip() for line in second.stderr.splitlines() if "|" in line}
    assert "benchbench.catalog" in imported
    assert not {"torch", "open_clip", "datasets", "torchvision"} & imported


def test_the_index_goes_stale_when_a_plugin_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.INDEX_ENV, str(tmp_path / "index.json"))
    plugin = _plugin(tmp_path)
    catalog.remember(load_registry([plugin], entry_points=False), [plugin])
    assert [c["name"] for c in catalog.cached([plugin])["components"]] == ["pick"]
    assert catalog.cached([plugin, TOY]) is None  # another set of plugins
    with open(plugin, "a") as fh:
        fh.write("# edited\n")
    assert catalog.cached([plugin]) is None


def test_a_load_with_a_failed_plugin_is_not_indexed(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.INDEX_ENV, str(tmp_path / "index.json"))
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("import not_a_module_anywhere\n")
    data = catalog.remember(load_registry([str(broken)], entry_points=False), [str(broken)])
    assert data["failures"] and "not_a_module_anywhere" in data["failures"][0]["reason"]
    assert not (tmp_path / "index.json").exists()
