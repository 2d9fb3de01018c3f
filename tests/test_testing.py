"""The plugin authors' kit (``benchbench.testing``): its checks catch what they promise to
catch (on the torch-free toy track, in milliseconds), its fixtures run real smoke cells
of both tracks on one session cache, and pytest loads it as a plugin without torch."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from benchbench.registry import load_registry
from benchbench.testing import check_component_runs, run_smoke_cell
from tests.conftest import TOY

TOY_CELL = {"attack": "shift", "evaluators": ["error"]}

# Next to the toy track: a defense that meets the contract and evaluators that break it.
TOY_EXTRAS = """
import math
from pydantic import Field
import benchbench
from benchbench.api import Evaluator, Metric, Params
from tests.toy_plugin import ClipDefense as Clamp

class Trim(Clamp):
    name = "trim"
    description = "the toy track's clamp, its param documented"

    class Params(Params):
        bound: float = Field(1.0, gt=0, description="clamp bound")

class Nan(Evaluator):
    name = "nan"
    track = "toy"
    description = "reports a NaN"
    metrics = (Metric("value", True, "always NaN"),)

    def evaluate(self, mean, seed):
        return {"value": math.nan}

class Partial(Evaluator):
    name = "partial"
    track = "toy"
    description = "declares two metrics, reports one"
    metrics = (Metric("first", True, "reported"), Metric("second", True, "never reported"))

    def evaluate(self, mean, seed):
        return {"first": mean}

@benchbench.hookimpl
def benchbench_defenses():
    return [Trim]

@benchbench.hookimpl
def benchbench_evaluators():
    return [Nan, Partial]
"""


@pytest.fixture(scope="module")
def toy_extras(tmp_path_factory):
    path = tmp_path_factory.mktemp("extras") / "toy_extras.py"
    path.write_text(TOY_EXTRAS)
    return load_registry([TOY, str(path)], entry_points=False)


def test_run_smoke_cell_returns_the_runner_result(toy_registry):
    result = run_smoke_cell("toy", defense={"name": "clamp", "params": {"bound": 0.5}}, registry=toy_registry,
                            **TOY_CELL)
    assert result["status"] == "ok"
    assert result["components"]["defense"]["params"] == {"bound": 0.5}
    assert result["components"]["task"]["params"]["n"] == 20  # the toy task's smoke preset
    assert set(result["metrics"]["error"]) == {"abs_error", "score"}


def test_a_failed_cell_fails_with_its_traceback(toy_registry):
    with pytest.raises(AssertionError, match="(?s)defense=boom.*RuntimeError: boom inside the defense"):
        run_smoke_cell("toy", defense="boom", registry=toy_registry, **TOY_CELL)


def test_an_unknown_name_shows_why_plugins_failed(tmp_path):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise ImportError('needs a missing library')\n")
    registry = load_registry([TOY, str(broken)], entry_points=False)
    with pytest.raises(AssertionError, match="(?s)unknown defense 'mine'.*broken_plugin.py' failed to load: "
                                             "ImportError: needs a missing library"):
        run_smoke_cell("toy", defense="mine", registry=registry, **TOY_CELL)


def test_a_track_without_smoke_defaults_needs_the_cell_spelled_out(toy_registry):
    with pytest.raises(TypeError, match="pass attack= and evaluators="):
        run_smoke_cell("toy", registry=toy_registry)
    with pytest.raises(TypeError, match="either registry or extra_plugins"):
        run_smoke_cell("toy", registry=toy_registry, extra_plugins=[TOY], **TOY_CELL)


def test_check_component_runs_puts_the_component_in_its_slot(toy_extras):
    trim = toy_extras.get("defense", "toy", "trim")
    result = check_component_runs(trim, {"bound": 2.0}, registry=toy_extras, **TOY_CELL)
    assert (result["components"]["defense"]["name"], result["components"]["defense"]["params"]) == \
        ("trim", {"bound": 2.0})
    with pytest.raises(TypeError, match="defense= is the component under test"):
        check_component_runs(trim, registry=toy_extras, defense="none", **TOY_CELL)


def test_check_component_runs_needs_every_declared_metric_finite(toy_extras):
    with pytest.raises(AssertionError, match=r"NonFiniteMetric: evaluator 'nan' returned nan for metric 'value'"):
        check_component_runs(toy_extras.get("evaluator", "toy", "nan"), registry=toy_extras, attack="shift")
    with pytest.raises(AssertionError, match=r"'partial' did not report \['second'\]"):
        check_component_runs(toy_extras.get("evaluator", "toy", "partial"), registry=toy_extras,
                             attack="shift")


def test_check_component_runs_notices_a_stale_installed_version(toy_extras):
    trim = toy_extras.get("defense", "toy", "trim")
    edited = type("Trim", (trim,), {"version": "2"})  # the author's working copy, not reinstalled
    with pytest.raises(AssertionError, match="older version of 'trim' installed"):
        check_component_runs(edited, registry=toy_extras, **TOY_CELL)


def test_clip_context_checks_each_slot_on_one_shared_cache(clip_context):
    registry = clip_context.registry
    result = clip_context.check(registry.get("defense", "clip", "none"))
    roles = {(e["name"], m): r for e in result["components"]["evaluators"] for m, r in e["metric_roles"].items()}
    assert (roles[("zero-shot", "top1")], roles[("linear-probe", "top1")], roles[("asr", "asr")]) == \
        ("utility", "utility", "robustness")
    again = clip_context.check(registry.get("evaluator", "clip", "linear-probe"))
    assert not [s for s in again["stages"] if s.endswith(":build")], again["stages"]  # all from the cache
    assert again["metrics"]["linear-probe"] == result["metrics"]["linear-probe"]


def test_clip_context_gives_the_tasks_own_stages(clip_context):
    stage = clip_context.task.base_data(clip_context.ctx)
    assert {"train", "clean", "eval"} <= {p.name for p in stage.path.iterdir()}
    assert clip_context.ctx.preset == "smoke" and clip_context.task.params.n_train == 256


def test_reid_context_checks_an_attack(reid_context):
    result = reid_context.check(reid_context.registry.get("attack", "reid", "odfa"))
    evaluator = result["components"]["evaluators"][0]
    assert evaluator["name"] == "reid-rank" and set(evaluator["metric_roles"].values()) == {"utility"}
    assert 0 <= result["metrics"]["reid-rank"]["mAP"]["value"] <= 1


def test_pytest_loads_the_kit_as_a_plugin_without_torch(tmp_path):
    (tmp_path / "test_uses_the_kit.py").write_text(textwrap.dedent("""
        import sys

        def test_loaded_without_torch(request):  # runs first: fixtures below load the plugins
            assert request.config.pluginmanager.has_plugin("benchbench")
            assert "torch" not in sys.modules

        def test_fixtures_need_no_conftest(benchbench_registry):
            assert {"clip", "reid"} <= set(benchbench_registry.tracks())
    """))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
