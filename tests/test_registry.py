import textwrap

import pytest

from benchbench import DISTRIBUTION
from benchbench.errors import ConfigError, PluginError
from benchbench.registry import DISABLE_ENV, load_registry
from tests.conftest import TOY


def test_toy_components_are_indexed_and_tagged(toy_registry):
    cls = toy_registry.get("defense", "toy", "clamp")
    assert cls.plugin.name == TOY and cls.plugin.distribution == "local" and cls.plugin.version == "0.3"
    assert toy_registry.tracks() == ["toy"]


def test_unknown_name_suggests_close_matches(toy_registry):
    with pytest.raises(ConfigError, match=r"unknown defense 'clmap'.*did you mean 'clamp'"):
        toy_registry.get("defense", "toy", "clmap")


def _write(tmp_path, name, body):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_broken_plugin_is_recorded_and_others_still_load(tmp_path):
    broken = _write(tmp_path, "broken", "raise ImportError('needs a missing lib')\n")
    reg = load_registry([broken, TOY], entry_points=False)
    assert [f.plugin for f in reg.failures] == [broken]
    assert "needs a missing lib" in reg.failures[0].reason
    assert reg.get("task", "toy", "toy-task")
    with pytest.raises(PluginError, match="needs a missing lib"):
        load_registry([broken, TOY], entry_points=False, strict=True)


def test_misspelled_hook_is_a_failure(tmp_path):
    typo = _write(tmp_path, "typo", """
        import benchbench
        @benchbench.hookimpl
        def benchbench_defences():
            return []
    """)
    reg = load_registry([typo], entry_points=False)
    assert reg.failures and "benchbench_defences" in reg.failures[0].reason


def test_duplicate_component_names_name_both_plugins(tmp_path):
    dup = _write(tmp_path, "dup", """
        import benchbench
        from benchbench.api import Defense
        class Clamp(Defense):
            name = "clamp"
            track = "toy"
        @benchbench.hookimpl
        def benchbench_defenses():
            return [Clamp]
    """)
    with pytest.raises(PluginError, match=rf"two defenses named 'clamp'.*'{TOY}'.*'{dup}'"):
        load_registry([TOY, dup], entry_points=False)


def test_wrong_return_type_is_a_failure(tmp_path):
    bad = _write(tmp_path, "bad", """
        import benchbench
        @benchbench.hookimpl
        def benchbench_attacks():
            return [object]
    """)
    reg = load_registry([bad], entry_points=False)
    assert "expected a benchbench.api attack class" in reg.failures[0].reason


def test_disable_env_blocks_a_plugin(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, TOY)
    reg = load_registry([TOY], entry_points=False)
    assert not reg.components


def test_builtin_entry_points_all_load(registry):
    assert not registry.failures, registry.failures
    for track in ("clip", "reid"):
        assert registry.get("attack", track, "none") and registry.get("defense", track, "none")
    for cls in registry.components.values():
        assert cls.plugin.distribution == DISTRIBUTION


def test_a_string_from_a_component_hook_is_one_failure(tmp_path):
    bad = _write(tmp_path, "strhook", """
        import benchbench
        @benchbench.hookimpl
        def benchbench_defenses():
            return "Clamp"
    """)
    reg = load_registry([bad], entry_points=False)
    assert [f.reason for f in reg.failures] == [
        "PluginError: benchbench_defenses returned 'Clamp'; expected a list of benchbench.api defense classes"]


def test_a_hookimpl_validation_error_keeps_pluggys_reason(tmp_path):
    bad = _write(tmp_path, "badargs", """
        import benchbench
        @benchbench.hookimpl
        def benchbench_cell_finished(cell, outcome):
            pass
    """)
    reg = load_registry([bad], entry_points=False)
    (failure,) = reg.failures
    assert "\n" not in failure.reason and failure.reason.startswith("PluginValidationError: ")
    assert "Argument(s) {'outcome'} are declared in the hookimpl but can not be found in the hookspec" \
        in failure.reason
