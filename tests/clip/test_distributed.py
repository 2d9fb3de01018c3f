"""One training on two processes (gloo, CPU) is the one-process training of the same
global batches: the same loss and gradients in a step, the same weights, log and
re-matching pool after a short training."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from benchbench import distributed
from benchbench.clip.data import load_pairs
from benchbench.clip.model import ClipModel, ModelSpec
from benchbench.clip.trainer import PairSet, Phase, TrainConfig, TrainState, forward_backward
from benchbench.precision import Precision
from benchbench_clip_baseline import StandardClip
from benchbench_roclip import RoCLIP
from tests.clip.conftest import assert_same_weights
from tests.processes import on_processes

CONFIG = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=0, progress=False)
ROCLIP = {"first_match_epoch": 2, "match_every": 1, "image_augmentation": "none", "eda": 0.0, "pool_size": 32}


@pytest.fixture(scope="module")
def data(world, tmp_path_factory) -> PairSet:
    pairs = load_pairs(world[0], 32, cache_dir=tmp_path_factory.mktemp("hf"))
    return PairSet.from_dataset(pairs, ClipModel.create(ModelSpec(), seed=0))


def _one_step(data: PairSet, index: torch.Tensor) -> dict:
    """Loss terms and gradients of one standard-CLIP step on the global batch ``index``."""
    model = ClipModel.create(ModelSpec(), seed=0)
    model.net.train()
    state = TrainState(model, data, CONFIG, Phase("train", 1), torch.Generator().manual_seed(0))
    images = data.images[index[distributed.shard(len(index))]]  # this rank's slice, as the loop's feed gives it
    terms = forward_backward(StandardClip(), state, Precision(), index, torch.arange(len(data)), images)
    return {"terms": terms, "grads": {n: p.grad for n, p in model.net.named_parameters()}}


def _train(data: PairSet, defense_cls: type, params: dict | None, config: TrainConfig = CONFIG) -> dict:
    model = ClipModel.create(ModelSpec(), seed=config.seed)
    defense = defense_cls(params)
    log = defense.train(model, config, data)
    pool = defense.pool.state_dict() if hasattr(defense, "pool") else None
    matches = defense.matches.state_dict() if hasattr(defense, "matches") else None
    return {"weights": model.net.state_dict(), "log": [{k: v for k, v in r.items() if k not in ("seconds", "timed")}
                                                        for r in log], "pool": pool, "matches": matches}


def test_a_step_on_two_processes_has_the_loss_and_gradients_of_one(data, tmp_path):
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:16]
    one = _one_step(data, index)
    two = on_processes(tmp_path, _one_step, data, index)[0]
    assert two["terms"].keys() == one["terms"].keys() == {"clip"}
    assert two["terms"]["clip"] == pytest.approx(one["terms"]["clip"], abs=1e-5)
    assert two["grads"].keys() == one["grads"].keys()
    for name, grad in one["grads"].items():
        assert torch.allclose(two["grads"][name], grad, atol=1e-5), name


@pytest.mark.parametrize("defense_cls, params", [(StandardClip, None), (RoCLIP, ROCLIP)], ids=["none", "roclip"])
def test_a_training_on_two_processes_is_the_training_on_one(data, tmp_path, defense_cls, params):
    one = _train(data, defense_cls, params)
    two = on_processes(tmp_path, _train, data, defense_cls, params)[0]
    assert_same_weights(two["weights"], one["weights"], atol=1e-4)
    assert len(two["log"]) == len(one["log"]) == CONFIG.epochs
    for a, b in zip(two["log"], one["log"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["logit_scale"] == pytest.approx(b["logit_scale"], abs=1e-4)
        assert {k: v for k, v in a.items() if k not in ("loss", "logit_scale")} == \
               {k: v for k, v in b.items() if k not in ("loss", "logit_scale")}
    if defense_cls is RoCLIP:  # every rank's captions entered the pool, and rank 0's log holds every match
        assert torch.equal(two["pool"]["rows"], one["pool"]["rows"])
        assert torch.allclose(two["pool"]["features"], one["pool"]["features"], atol=1e-4)
        assert len(one["matches"]["epoch"]) == len(data) // 16 * 16  # epoch 2 matched every image
        assert {k: v.tolist() for k, v in two["matches"].items()} == {k: v.tolist() for k, v in one["matches"].items()}


def test_a_batch_the_processes_cannot_split_is_refused(data, tmp_path):
    config = TrainConfig(epochs=1, batch_size=15, lr=1e-3, progress=False)
    with pytest.raises(mp.ProcessRaisedException, match="batch_size 15 does not split over 2 processes; "
                                                         "set batch_size to a multiple of 2"):
        on_processes(tmp_path, _train, data, StandardClip, None, config)
