"""Contract tests every built-in component must pass (third-party plugins can run the
same checks with ``benchbench.testing.check_component``)."""
import pytest

from benchbench.api import Defense, Params
from benchbench.registry import load_registry
from benchbench.testing import check_component

REGISTRY = load_registry()
COMPONENTS = sorted(REGISTRY.components.items())


@pytest.mark.parametrize("key, cls", COMPONENTS, ids=["/".join(k) for k, _ in COMPONENTS])
def test_builtin_component_contract(key, cls):
    check_component(cls)


@pytest.mark.parametrize("track", ["clip", "reid"])
def test_every_track_has_a_task_and_clean_references(track):
    assert REGISTRY.of_kind("task", track), f"no task for track {track}"
    assert REGISTRY.get("attack", track, "none")
    assert REGISTRY.get("defense", track, "none")
    assert REGISTRY.of_kind("evaluator", track)


def test_check_component_catches_a_broken_component():
    class NoHelp(Defense):
        name = "no-help"
        track = "toy"
        description = "param without help"

        class Params(Params):
            k: int = 1

    with pytest.raises(AssertionError, match="param 'k' needs Field"):
        check_component(NoHelp)
