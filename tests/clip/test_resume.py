"""A CLIP training stopped after a checkpoint and resumed ends exactly where an
uninterrupted one does: weights, log, and the defense's saved artifacts."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from benchbench.checkpoint import Checkpointer
from tests.conftest import DyingCheckpointer, Killed
from benchbench.clip.data import load_pairs
from benchbench.clip.model import ClipModel, ModelSpec
from benchbench.clip.trainer import PairSet, TrainConfig

CONFIG = TrainConfig(epochs=4, batch_size=16, lr=1e-3, seed=0, progress=False)


@pytest.fixture(scope="module")
def pairs(world, tmp_path_factory):
    return load_pairs(world[0], 32, cache_dir=tmp_path_factory.mktemp("hf"))


def _train(pairs, defense, config):
    model = ClipModel.create(ModelSpec(), seed=config.seed)
    data = PairSet.from_dataset(pairs, model)
    poison = torch.arange(len(data)) % 7 == 0
    log = defense.train(model, config, data, clean=data, poison=poison)
    return model, log


def _without_times(log) -> str:
    """The log without wall times, as JSON text (NaN diagnostics compare equal)."""
    return json.dumps([{k: v for k, v in r.items() if k not in ("seconds", "timed")} for r in log])


# 48 pairs, batches of 16: 3 steps an epoch. Kills land mid-epoch in a re-matching epoch
# (RoCLIP, OTCCLIP), in SafeCLIP's filtered phase after its split, and at an epoch end.
@pytest.mark.slow  # ~35 s per case on a shared 2-core machine
@pytest.mark.parametrize("name, every, last", [("roclip", 1, 5), ("otcclip", 2, 3), ("safeclip", 2, 4),
                                               ("safeclip", "epoch", 3), ("cleanclip", 1, 13)])
def test_a_resumed_training_matches_the_uninterrupted_one(registry, pairs, tmp_path, name, every, last):
    make = registry.get("defense", "clip", name)
    ref_defense = make(preset="smoke")
    ref_model, ref_log = _train(pairs, ref_defense, CONFIG)

    folder = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        _train(pairs, make(preset="smoke"), dataclasses.replace(CONFIG, checkpoints=DyingCheckpointer(folder, every,
                                                                                                      last)))
    defense = make(preset="smoke")  # a new process: fresh objects, only the folder survives
    model, log = _train(pairs, defense, dataclasses.replace(CONFIG, checkpoints=Checkpointer(folder, every)))

    ref, resumed = ref_model.net.state_dict(), model.net.state_dict()
    assert all(torch.equal(ref[k], resumed[k]) for k in ref)
    assert _without_times(log) == _without_times(ref_log)
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "resumed"
    ref_dir.mkdir(), dir_.mkdir()
    ref_defense.save_artifacts(ref_dir)
    defense.save_artifacts(dir_)
    assert {f.name: f.read_bytes() for f in ref_dir.iterdir()} == {f.name: f.read_bytes() for f in dir_.iterdir()}


def test_bf16_training_is_finite_and_differs_from_fp32(registry, pairs):
    none = registry.get("defense", "clip", "none")
    config = dataclasses.replace(CONFIG, epochs=1)
    fp32, _ = _train(pairs, none(preset="smoke"), config)
    bf16, log = _train(pairs, none(preset="smoke"), dataclasses.replace(config, precision="bf16"))
    assert all(torch.isfinite(p).all() for p in bf16.net.parameters())
    assert all(p.dtype == torch.float32 for p in bf16.net.parameters())  # autocast: fp32 master weights
    assert any(not torch.equal(a, b) for a, b in zip(fp32.net.parameters(), bf16.net.parameters()))
