"""The ReID task end to end (smoke preset): one training per (defense, seed) shared by
every attack column, a user's own Market-1501 folder through ``data_root``."""
from __future__ import annotations

import shutil

import pytest

from benchbench.cells import CellSpec, ComponentRef
from benchbench.runner import Environment, run_cell
from benchbench.testing import check_component


def spec(attack: str, defense: str, seed: int = 0, **task_params) -> dict:
    return CellSpec("reid", ComponentRef("reid-adversarial", task_params), ComponentRef(attack),
                    ComponentRef(defense), (ComponentRef("reid-rank"),), seed, "smoke").to_dict()


def test_components_meet_the_contract(registry):
    names = [k for k in registry.components if k[1] == "reid"]
    assert {n for kind, _, n in names if kind == "defense"} >= {"none", "metric-at"}
    for key in names:
        check_component(registry.components[key])


def test_one_training_per_defense_and_seed(registry, tmp_path):
    env = Environment(cache_root=str(tmp_path / "cache"), progress=False)
    builds = hits = 0
    for defense in ("none", "metric-at"):
        for attack in ("none", "sma", "fna"):
            result = run_cell(spec(attack, defense), env, registry)
            assert result["status"] == "ok", result["traceback"]
            metrics = result["metrics"]["reid-rank"]
            assert set(metrics) == {"mAP", "rank1", "rank5", "rank10"}
            assert 0 <= metrics["mAP"]["value"] <= 1
            builds += result["stages"].get("reid-model:build", 0)
            hits += result["stages"].get("reid-model:hit", 0)
    assert (builds, hits) == (2, 4)
    rerun = run_cell(spec("odfa", "none"), env, registry)
    assert rerun["stages"] == {"reid-synthetic:hit": 1, "reid-model:hit": 1, "reid-gallery:hit": 1}


def test_user_data_root(registry, tmp_path, tiny_root):
    root = tmp_path / "my_market"
    shutil.copytree(tiny_root, root)
    env = Environment(cache_root=str(tmp_path / "cache"), progress=False)
    result = run_cell(spec("metric-ifgsm", "none", data_root=str(root)), env, registry)
    assert result["status"] == "ok", result["traceback"]
    assert result["dataset"] == "my_market"
    assert "reid-synthetic:build" not in result["stages"]
    (root / "query" / "bad_name.jpg").write_bytes(b"")
    broken = run_cell(spec("none", "none", data_root=str(root)), env, registry)
    assert broken["status"] == "failed"
    assert broken["error"].startswith("DataError:") and "bad_name.jpg" in broken["error"]


@pytest.mark.parametrize("params", [{"arch": "resnet_18"}, {"height": 4}])
def test_bad_task_params_are_one_line_errors(registry, tmp_path, params):
    env = Environment(cache_root=str(tmp_path / "cache"), progress=False)
    result = run_cell(spec("none", "none", **params), env, registry)
    assert result["status"] == "failed"
    assert ("did you mean resnet18" in result["error"]) or ("height" in result["error"])
