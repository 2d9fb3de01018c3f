"""The shared trainer: reproducible, and calling every defense hook as documented."""
from __future__ import annotations

import pytest
import torch

from benchbench.clip.api import ClipDefense
from benchbench_clip_baseline import StandardClip
from benchbench.clip.data import load_pairs
from benchbench.clip.model import ClipModel, ModelSpec, contrastive_loss
from benchbench.clip.trainer import PairSet, Phase, TrainConfig
from tests.clip.conftest import assert_same_weights

CONFIG = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=0, progress=False)


@pytest.fixture(scope="module")
def pairs(world, tmp_path_factory):
    return load_pairs(world[0], 32, cache_dir=tmp_path_factory.mktemp("hf"))


def _train(pairs, defense, config=CONFIG, seed=0, poison=None, clean=False):
    model = ClipModel.create(ModelSpec(), seed=seed)
    data = PairSet.from_dataset(pairs, model)
    log = defense.train(model, config, data, clean=data if clean else None, poison=poison)
    return model, log


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.net.parameters()])


def test_same_seed_same_model_other_seed_other_model(pairs):
    a, log_a = _train(pairs, StandardClip())
    b, log_b = _train(pairs, StandardClip())
    c, _ = _train(pairs, StandardClip(), config=TrainConfig(**{**CONFIG.__dict__, "seed": 1}), seed=1)
    assert torch.equal(_weights(a), _weights(b))
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]
    assert not torch.equal(_weights(a), _weights(c))


def test_training_lowers_the_contrastive_loss(pairs):
    _, log = _train(pairs, StandardClip(), config=TrainConfig(epochs=6, batch_size=16, lr=2e-3, progress=False))
    assert log[-1]["loss"]["clip"] < log[0]["loss"]["clip"] - 0.2
    assert all(r["logit_scale"] <= 100.0 for r in log)


class Recorder(ClipDefense):
    """Re-matches every image to the next caption in odd epochs, drops image 0, adds a
    fine-tune phase on clean pairs with an in-modal term, and records what it saw."""

    name = "recorder"
    description = "records hook calls"
    needs_tokens = True

    def __init__(self):
        super().__init__()
        self.calls, self.token_shapes, self.batches = [], [], []

    def phases(self, config):
        return [Phase("train", 2), Phase("finetune", 1, data="clean", lr=1e-4)]

    def on_epoch_start(self, state):
        self.calls.append(("start", state.phase.name, state.epoch, state.global_epoch))
        if state.phase.name == "train" and state.epoch == 1:
            pairing = (torch.arange(len(state.data)) + 1) % len(state.data)
            pairing[0] = -1
            return pairing
        return None

    def augment(self, batch, state):
        self.batches.append((state.phase.name, state.epoch, batch.index.clone(), batch.caption_index.clone()))
        return batch

    def loss(self, batch, features, state):
        self.token_shapes.append((features.image_tokens.shape, features.text_mask.shape))
        terms = super().loss(batch, features, state)
        if state.phase.name == "finetune":
            terms["inmodal"] = contrastive_loss(features.image, features.image, features.logit_scale)
        return terms

    def on_epoch_end(self, state):
        self.calls.append(("end", state.phase.name, state.epoch, state.global_epoch))


def test_hooks_phases_rematching_and_diagnostics(pairs):
    poison = torch.zeros(len(pairs), dtype=torch.bool)
    poison[:12] = True
    defense = Recorder()
    _, log = _train(pairs, defense, poison=poison, clean=True)
    assert defense.calls == [("start", "train", 0, 0), ("end", "train", 0, 0), ("start", "train", 1, 1),
                             ("end", "train", 1, 1), ("start", "finetune", 0, 2), ("end", "finetune", 0, 2)]
    assert [r["phase"] for r in log] == ["train", "train", "finetune"]
    assert "inmodal" in log[2]["loss"] and "inmodal" not in log[0]["loss"]
    for phase, epoch, index, caption_index in defense.batches:
        if (phase, epoch) == ("train", 1):
            assert 0 not in index.tolist()
            assert torch.equal(caption_index, (index + 1) % len(pairs))
        else:
            assert torch.equal(caption_index, index)
    assert defense.token_shapes[0] == (torch.Size([16, 16, 64]), torch.Size([16, 20]))
    assert log[1]["rematched"] == 1.0 and log[1]["rematch_poison_recall"] == 1.0
    assert log[1]["rematch_precision"] == pytest.approx(12 / len(pairs))
    assert "rematched" not in log[0]


def test_a_phase_on_clean_pairs_needs_clean_pairs(pairs):
    with pytest.raises(ValueError, match="needs clean pairs"):
        _train(pairs, Recorder())


def test_safeclip_encodes_identical_views_once_for_the_same_training(pairs, monkeypatch):
    """Without augmentation SafeCLIP's second view is the batch: one encoder pass a step
    instead of two, and the loss, log and weights of encoding it twice (to rounding)."""
    from benchbench_safeclip import SafeCLIP

    class EncodeTwice(SafeCLIP):  # the previous behaviour: the identical view encoded again
        def augment(self, batch, state):
            self.second_view = batch
            return batch

    params = {"inmodal_warmup": 1, "multimodal_warmup": 1, "bank_size": 16, "image_augmentation": "none",
              "eda": 0.0}
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-3, seed=0, progress=False)  # one epoch per phase
    calls = []
    encode = ClipModel.encode
    monkeypatch.setattr(ClipModel, "encode", lambda self, *a, **k: calls.append(1) or encode(self, *a, **k))
    once, log_once = _train(pairs, SafeCLIP(params), config=config)
    n_once, calls[:] = len(calls), []
    twice, log_twice = _train(pairs, EncodeTwice(params), config=config)
    steps = 3 * -(-len(pairs) // 16)
    assert len(calls) - n_once == steps  # every training step encoded once fewer (embed_all's passes aside)
    assert [r["phase"] for r in log_once] == ["inmodal-warmup", "clip-warmup", "filtered"]
    for a, b in zip(log_once, log_twice):
        assert a["loss"].keys() == b["loss"].keys()
        assert all(a["loss"][k] == pytest.approx(b["loss"][k], abs=1e-5) for k in a["loss"])
    assert_same_weights(once.net.state_dict(), twice.net.state_dict(), atol=1e-4)
