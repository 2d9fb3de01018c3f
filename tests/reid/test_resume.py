"""A ReID training stopped after a checkpoint and resumed ends with the weights and the
log of an uninterrupted one (the sampler's Python/NumPy draws, augmentation, the
defense's attack generators and meta-splits all continue where they were)."""
from __future__ import annotations

import json

import pytest
import torch

from benchbench.checkpoint import Checkpointer
from tests.conftest import DyingCheckpointer, Killed
from benchbench.reid.data import load_reid_data
from benchbench.reid.trainer import TrainConfig, train

CONFIG = TrainConfig(arch="osnet_x0_25", epochs=2, ids_per_batch=4, images_per_id=2)


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return load_reid_data(tiny_root, (32, 16))


def _train(tiny, defense, path, **kwargs):
    model = train(defense, tiny.train, tiny.num_train_ids, CONFIG, seed=3, show_progress=False, log_path=path,
                  **kwargs)
    log = json.loads(path.read_text())
    return model.state_dict(), [{k: v for k, v in e.items() if k != "seconds"} for e in log["epochs"]]


# dddefense without balancing (the grid test kills a balanced one); metric-at ramps eps per epoch
@pytest.mark.slow  # ~15 s per case
@pytest.mark.parametrize("name, params, every, last", [
    ("dddefense", {"balance": False}, 1, 3), ("dddefense", {"balance": False, "self_meta": False}, "epoch", 1),
    ("metric-at", {}, 2, 2), ("none", {}, 1, 1)])
def test_a_resumed_training_matches_the_uninterrupted_one(registry, tiny, tmp_path, name, params, every, last):
    make = registry.get("defense", "reid", name)
    ref, ref_log = _train(tiny, make(params, preset="smoke"), tmp_path / "ref.json")
    folder = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        _train(tiny, make(params, preset="smoke"), tmp_path / "killed.json",
               checkpoints=DyingCheckpointer(folder, every, last))
    state, log = _train(tiny, make(params, preset="smoke"), tmp_path / "resumed.json",
                        checkpoints=Checkpointer(folder, every))
    assert all(torch.equal(ref[k], state[k]) for k in ref)
    assert log == ref_log


def test_bf16_training_is_finite(registry, tiny, tmp_path):
    state, log = _train(tiny, registry.get("defense", "reid", "none")(preset="smoke"), tmp_path / "log.json",
                        precision="bf16")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert json.loads((tmp_path / "log.json").read_text())["precision"] == "bf16"
