import pytest

from benchbench.config import expand, load_config
from benchbench.errors import ConfigError


def test_expand_is_attack_major_and_validates(toy_config, toy_registry):
    cells = expand(load_config(toy_config), toy_registry, preset="smoke")
    assert len(cells) == 2 * 2 * 2
    # the clean column first: every (defense, seed) model is built before any attack reuses it
    assert [(c.attack.name, c.defense.name, c.seed) for c in cells] == [
        (attack, defense, seed) for attack in ("none", "shift") for defense in ("none", "clamp") for seed in (0, 1)]
    assert cells[0].resolve(toy_registry).task.params.n == 20  # smoke preset applied


@pytest.mark.parametrize("text, message", [
    ("track: toy\nattacks: [nonee]\ndefenses: [none]\nevaluators: [error]\n", "unknown attack 'nonee'.*did you mean 'none'"),
    ("track: toyy\nattacks: [none]\ndefenses: [none]\nevaluators: [error]\n", "unknown track 'toyy'"),
    ("track: toy\nattacks: [{name: shift, params: {delt: 1}}]\ndefenses: [none]\nevaluators: [error]\n",
     "bad params for attack 'shift'.*delt"),
    ("track: toy\nattacks: []\ndefenses: [none]\nevaluators: [error]\n", "attacks: Value error, must list"),
    ("track: toy\nattack: [none]\ndefenses: [none]\nevaluators: [error]\n", "attack: Extra inputs"),
    ("track: [unclosed\n", "not valid YAML"),
])
def test_config_errors_are_one_line(tmp_path, toy_registry, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        expand(load_config(path), toy_registry)
    assert "\n" not in str(info.value)


def test_unknown_preset(toy_config, toy_registry):
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        expand(load_config(toy_config), toy_registry, preset="fast")
