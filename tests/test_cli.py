import json

from tests.conftest import TOY, run_cli


def test_grid_leaderboard_validate_roundtrip(toy_config, tmp_path):
    store, out = tmp_path / "r.sqlite", tmp_path / "lb"
    r = run_cli("grid", str(toy_config), "--plugin", TOY, "--store", str(store),
                "--cache", str(tmp_path / "c"), "--preset", "smoke", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "8 cells: 8 run, 0 already in" in r.stdout
    r = run_cli("leaderboard", "--store", str(store), "--out", str(out), "--plugin", TOY)
    assert r.returncode == 0, r.stderr
    assert "## error / score (higher is better)" in r.stdout
    r = run_cli("validate", str(out / "toy" / "leaderboard.json"))
    assert r.returncode == 0 and "valid (8 entries" in r.stdout
    data = json.loads((out / "toy" / "leaderboard.json").read_text())
    data["entries"][0]["n_seeds"] = 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    r = run_cli("validate", str(bad))
    assert r.returncode == 1 and "entries/0/n_seeds" in r.stderr
    data["entries"][0]["n_seeds"] = 2
    for entry in data["entries"]:
        if entry["metric"] == "abs_error":
            entry["direction"] = "higher"
    bad.write_text(json.dumps(data))
    r = run_cli("validate", str(bad), "--against", str(out / "toy" / "leaderboard.json"))
    assert r.returncode == 1
    assert r.stderr.strip() == f"{bad}: error/abs_error: direction 'higher' differs from the reference's 'lower'"


def test_failing_cell_exit_code_and_summary(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("track: toy\nattacks: [none]\ndefenses: [none, boom]\nevaluators: [error]\n")
    r = run_cli("grid", str(config), "--plugin", TOY, "--store", str(tmp_path / "r.sqlite"),
                "--cache", str(tmp_path / "c"), "--no-progress")
    assert r.returncode == 1
    assert "1 run, 0 already in" in r.stdout
    assert "failed: toy: defense=boom attack=none seed=0: RuntimeError: boom inside the defense" in r.stderr


def test_user_errors_are_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("track: toy\nattacks: [shfit]\ndefenses: [none]\nevaluators: [error]\n")
    r = run_cli("grid", str(config), "--plugin", TOY, "--store", str(tmp_path / "r.sqlite"))
    assert r.returncode == 2
    error_lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(error_lines) == 1 and "did you mean 'shift'" in error_lines[0]
    r = run_cli("leaderboard", "--store", str(tmp_path / "missing.sqlite"))
    assert r.returncode == 2 and "no results store" in r.stderr


def test_plugins_lists_components_and_failures(tmp_path):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("import not_a_module_anywhere\n")
    r = run_cli("plugins", "--plugin", TOY, "--plugin", str(broken))
    assert r.returncode == 0
    assert "toy-task" in r.stdout and "clamp" in r.stdout
    assert "No module named 'not_a_module_anywhere'" in r.stderr
    r = run_cli("plugins", "--plugin", str(broken), "--strict-plugins")
    assert r.returncode == 2 and "not_a_module_anywhere" in r.stderr
