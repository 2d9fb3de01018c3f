"""The cross-data-set protocol (task param ``eval_data``) and the synthetic world in the
DukeMTMC-reID and MSMT17 layouts, at the smoke preset (issues #12 and #15, item 5)."""
from __future__ import annotations

import pytest

from benchbench.cells import CellSpec, ComponentRef
from benchbench.errors import ConfigError
from benchbench.reid.task import ReidAdversarialTask
from benchbench.runner import Environment, run_cell

TRANSFER = {"eval_data": {"syn_seed": 1, "layout": "dukemtmcreid"}}


def spec(attack: str, **task_params) -> dict:
    return CellSpec("reid", ComponentRef("reid-adversarial", task_params), ComponentRef(attack),
                    ComponentRef("none"), (ComponentRef("reid-rank"),), 0, "smoke").to_dict()


#: the task's params before data_name and eval_data existed (their defaults are unchanged)
OLD_PARAMS = {"data_root", "layout", "height", "width", "syn_train_ids", "syn_test_ids", "syn_cameras",
              "syn_mean_images", "syn_seed", "arch", "weights", "epochs", "lr", "weight_decay", "batch_ids",
              "batch_images_per_id", "margin"}


@pytest.mark.parametrize("preset", ["smoke", "default", "paper"])
def test_default_identity_and_keys_are_unchanged(preset):
    """New params at their default stay out of the identity: the stored default grid's cell
    keys, stage keys and board protocol are what they were before the params existed."""
    assert set(ReidAdversarialTask(preset=preset).identity()["params"]) == OLD_PARAMS
    transfer = ReidAdversarialTask(TRANSFER, preset=preset)
    assert set(transfer.identity()["params"]) == OLD_PARAMS | {"eval_data"}
    assert transfer.identity(drop=("eval_data", "data_name")) == ReidAdversarialTask(preset=preset).identity()


@pytest.mark.parametrize("params, name", [
    ({}, "synthetic-market"),
    ({"layout": "msmt17"}, "synthetic-msmt17"),
    (TRANSFER, "synthetic-market→synthetic-duke"),
    ({"eval_data": {"syn_seed": 1}}, "synthetic-market→synthetic-market-seed1"),
    ({"data_root": "/data/Market-1501-v15.09.15", "eval_data": {"data_root": "/data/DukeMTMC-reID",
                                                                "layout": "dukemtmcreid"}},
     "Market-1501-v15.09.15→DukeMTMC-reID"),
    ({**TRANSFER, "data_name": "my pair"}, "my pair"),
])
def test_board_names(params, name):
    assert ReidAdversarialTask(params).dataset_name() == name


@pytest.mark.parametrize("params, message", [
    ({"eval_data": {"epochs": 3}}, "eval_data: epochs not among the data params"),
    ({"eval_data": {"syn_seed": 0}}, "describes the training data set itself"),
    ({"data_root": "/data/m", "eval_data": {"syn_seed": 1}}, "describes the training data set itself"),
    ({"eval_data": {"layout": "cuhk03"}}, "eval_data: layout"),
    ({"syn_cameras": 8}, "does not fit the market1501 layout's 6 cameras"),
])
def test_bad_cross_data_set_params(params, message):
    with pytest.raises(ConfigError, match=message):
        ReidAdversarialTask(params)
    ReidAdversarialTask({"syn_cameras": 8, "layout": "dukemtmcreid"})  # Duke names hold 8 cameras


@pytest.mark.slow
def test_layouts_and_a_market_to_duke_cell_at_smoke(registry, tmp_path):
    """Duke and MSMT17 synthetic worlds run a smoke cell each; the Market→Duke cell trains
    nothing (the Market cell's model) and ranks the other world's queries and gallery."""
    env = Environment(cache_root=str(tmp_path / "cache"), progress=False)
    results = {}
    for name, params in (("market", {}), ("duke", {"layout": "dukemtmcreid"}), ("msmt17", {"layout": "msmt17"}),
                         ("transfer", TRANSFER)):
        result = run_cell(spec("none", **params), env, registry)
        assert result["status"] == "ok", result["traceback"]
        results[name] = result
    assert results["duke"]["dataset"] == "synthetic-duke" and results["msmt17"]["dataset"] == "synthetic-msmt17"
    # one world, three layouts: the same images, so the same training and the same ranking
    assert results["duke"]["metrics"] == results["msmt17"]["metrics"] == results["market"]["metrics"]
    transfer = results["transfer"]
    assert transfer["dataset"] == "synthetic-market→synthetic-duke"
    assert transfer["stages"] == {"reid-synthetic:hit": 1, "reid-synthetic:build": 1, "reid-model:hit": 1,
                                  "reid-gallery:build": 1}
    assert transfer["metrics"] != results["market"]["metrics"]
    attacked = run_cell(spec("metric-fgsm", **TRANSFER), env, registry)
    assert attacked["status"] == "ok", attacked["traceback"]
    assert attacked["stages"] == {"reid-synthetic:hit": 2, "reid-model:hit": 1, "reid-gallery:hit": 1}
