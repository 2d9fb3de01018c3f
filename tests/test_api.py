import json

import pytest
from pydantic import Field

from benchbench.api import Defense, Params
from benchbench.errors import ConfigError


class Demo(Defense):
    name = "demo"
    track = "toy"

    class Params(Params):
        lr: float = Field(0.1, gt=0, description="learning rate")
        epochs: int = 3

    presets = {"smoke": {"epochs": 1}, "paper": {"epochs": 30, "lr": 0.5}}


def test_defaults_presets_and_overrides_merge_in_order():
    assert Demo().params.epochs == 3
    assert Demo(preset="smoke").params.epochs == 1
    assert Demo({"lr": 0.2}, preset="paper").params == Demo.Params(lr=0.2, epochs=30)


def test_bad_params_name_the_component_and_its_params():
    with pytest.raises(ConfigError, match=r"defense 'demo'.*epoch.*its params are: lr, epochs"):
        Demo({"epoch": 2})
    with pytest.raises(ConfigError, match="lr: Input should be greater than 0"):
        Demo({"lr": -1})


def test_identity_is_json_and_changes_with_params_and_version():
    a, b = Demo(), Demo({"epochs": 4})
    assert json.loads(json.dumps(a.identity())) == a.identity()
    assert a.identity() != b.identity()

    class Demo2(Demo):
        version = "2"

    assert Demo2().identity() != a.identity()


def test_describe_params_lists_types_defaults_and_help():
    rows = {r["name"]: r for r in Demo.describe_params()}
    assert rows["lr"] == {"name": "lr", "type": "float", "default": 0.1, "required": False, "choices": None,
                          "help": "learning rate"}


def test_describe_params_gives_literal_choices_and_json_defaults():
    from pathlib import Path
    from typing import Literal, Optional

    class Choosy(Defense):
        name = "choosy"
        track = "toy"

        class Params(Params):
            mode: Literal["a", "b"] = "a"
            maybe: Optional[Literal[1, 2]] = None
            where: Path = Path("/tmp/x")
            sizes: tuple[int, ...] = Field(default_factory=lambda: (1, 2))
            need: int

    rows = {r["name"]: r for r in Choosy.describe_params()}
    assert rows["mode"]["type"] == "Literal['a', 'b']" and rows["mode"]["choices"] == ["a", "b"]
    assert rows["maybe"]["choices"] == [1, 2, None]
    assert rows["where"]["default"] == "/tmp/x" and rows["sizes"]["default"] == [1, 2]
    assert rows["need"]["required"] and rows["need"]["default"] is None
    json.dumps(rows)
