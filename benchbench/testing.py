"""Plugin authors' kit: the contract checks every built-in component passes.

``check_component(MyDefense)`` raises ``AssertionError`` naming the first broken rule,
so a third-party plugin's own test suite can hold itself to the same contract:

    from benchbench.testing import check_component
    def test_contract():
        check_component(MyDefense)
"""
from __future__ import annotations

import json

from benchbench.api import Component, Evaluator, Task
from benchbench.config import PRESETS


def check_component(cls: type[Component]) -> None:
    """Static contract of a component class (no training, no data)."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    for attr in ("kind", "name", "track", "version"):
        value = getattr(cls, attr, None)
        assert isinstance(value, str) and value, f"{where}: '{attr}' must be a non-empty string"
    assert cls.name == cls.name.strip() and " " not in cls.name, f"{where}: name '{cls.name}' has spaces"
    assert cls.description and "\n" not in cls.description, f"{where}: needs a one-line description"
    unknown = set(cls.presets) - set(PRESETS)
    assert not unknown, f"{where}: presets {sorted(unknown)} are not among {PRESETS}"
    for preset in (None, *PRESETS):
        instance = cls(preset=preset)  # defaults and every preset must validate
        identity = instance.identity()
        assert json.loads(json.dumps(identity)) == identity, f"{where}: params must be JSON data"
    for field_name, field in cls.Params.model_fields.items():
        assert field.description, f"{where}: param '{field_name}' needs Field(description=...)"
    if issubclass(cls, Evaluator):
        names = [m.name for m in cls.metrics]
        assert names, f"{where}: an evaluator must declare its metrics"
        assert len(names) == len(set(names)), f"{where}: duplicate metric names {names}"
        for m in cls.metrics:
            assert isinstance(m.higher_is_better, bool), f"{where}: metric {m.name} needs a direction"
    if issubclass(cls, Task):
        task = cls()
        assert isinstance(task.dataset_name(), str) and task.dataset_name(), f"{where}: dataset_name()"
        assert isinstance(task.model_name(), str) and task.model_name(), f"{where}: model_name()"
