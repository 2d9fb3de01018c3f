"""Defenses whose first epochs are standard CLIP start from one shared training of those
epochs (the ``clip-prefix`` stage) and end with the weights and log they reach alone."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from benchbench.checkpoint import Checkpointer
from benchbench.clip.augment import NO_AUGMENTATION
from benchbench.clip.task import PREFIX, ClipPoisoningTask
from benchbench.clip.trainer import Phase, TrainConfig
from benchbench.context import RunContext
from benchbench.stages import StageCache

# smoke sizes, 4 epochs: 256 pairs in batches of 64 (4 steps an epoch)
TASK = {"epochs": 4}
# RoCLIP re-matching from (1-based) epoch 3: epoch 2 refills its 128-caption pool, epoch 1 is plain CLIP
ROCLIP = {"first_match_epoch": 3, "match_every": 1, **NO_AUGMENTATION}


def _without_times(log: list[dict]) -> str:
    return json.dumps([{k: v for k, v in r.items() if k not in ("seconds", "timed")} for r in log])


def _alone(task, base, poisoned, defense, ctx, tmp_path):
    """The defense trained from scratch, sharing nothing."""
    model, log = task._train(base, poisoned, defense, ctx, Checkpointer(tmp_path / f"alone-{defense.name}"))
    return model.net.state_dict(), log


def test_shared_prefixes_give_the_weights_and_logs_of_training_alone(registry, tmp_path):
    task = ClipPoisoningTask(TASK, preset="smoke")
    ctx = RunContext(cache=StageCache(tmp_path / "cache"), seed=0, preset="smoke", progress=False)
    attack = registry.get("attack", "clip", "badnets")(preset="smoke")
    defenses = [registry.get("defense", "clip", "roclip")(ROCLIP, preset="smoke"),  # branches off after epoch 1
                registry.get("defense", "clip", "none")(preset="smoke"),  # the rest of the standard run
                registry.get("defense", "clip", "cleanclip")(preset="smoke")]  # fine-tunes the standard run
    base = task.base_data(ctx)
    poisoned = task.poisoned_data(base, attack, ctx)
    config = task.train_config(0, False)
    assert [d.standard_prefix(config, 256) for d in defenses] == [1, 4, 4]

    for defense in defenses:
        stage = task.trained_model(base, attack, defense, ctx)
        shared = load_file(str(stage.path / "model.safetensors"))
        weights, log = _alone(task, base, poisoned, type(defense)(defense.params.model_dump(), preset="smoke"),
                              ctx, tmp_path)
        assert shared.keys() == weights.keys()
        assert all(torch.equal(shared[k], weights[k]) for k in shared), defense.name
        assert _without_times(json.loads((stage.path / "train_log.json").read_text())) == _without_times(log)
    # one standard training served all three: 1 epoch, then 3 more on top of it
    assert ctx.cache.builds(PREFIX) == 2 and ctx.cache.stats[(PREFIX, "hit")] >= 2


@pytest.mark.parametrize("name, params, expected", [
    ("none", {}, 15), ("cleanclip", {}, 15),
    ("roclip", {}, 10),  # default preset: re-matching from epoch 12, the pool refilled in epoch 11
    ("roclip", {"image_augmentation": "simclr"}, 0),  # augmented batches are not standard CLIP's
    ("roclip", {"eda": 0.1}, 0),
    ("roclip", {"pool_size": 6000}, 0),  # one epoch cannot refill the pool: it keeps older captions
    ("otcclip", {}, 0), ("safeclip", {}, 0),
])
def test_which_epochs_each_defense_shares(registry, name, params, expected):
    defense = registry.get("defense", "clip", name)(params, preset="default")
    assert defense.standard_prefix(TrainConfig(epochs=15, batch_size=128, lr=2.5e-3), 5000) == expected


def test_a_subclass_that_changes_training_does_not_inherit_the_prefix(registry):
    none, roclip = registry.get("defense", "clip", "none"), registry.get("defense", "clip", "roclip")

    class HalfLr(none):
        def phases(self, config):
            return [Phase("train", config.epochs, lr=config.lr / 2)]

    class ExtraLoss(roclip):
        def extra_loss(self, batch, features, state, rematched):
            return {"l2": features.image.pow(2).mean()}

    config = TrainConfig(epochs=15, batch_size=128, lr=2.5e-3)
    assert HalfLr().standard_prefix(config, 5000) == 0 and none().standard_prefix(config, 5000) == 15
    assert ExtraLoss(preset="default").standard_prefix(config, 5000) == 0
