"""The trainer: deterministic for a seed, and it calls the defense hooks in order."""
from __future__ import annotations

import pytest
import torch

from benchbench.reid.api import ReidDefense
from benchbench.reid.data import load_reid_data
from benchbench.reid.losses import batch_hard, soft_margin_triplet
from benchbench.reid.trainer import TrainConfig, train

CONFIG = TrainConfig(arch="osnet_x0_25", epochs=1, ids_per_batch=4, images_per_id=2)


class Plain(ReidDefense):
    name = "plain"
    description = "standard training"


class Recording(ReidDefense):
    """Records its hooks; adds copies of identity 0 seen by another camera."""

    name = "recording"
    description = "test double"

    def __init__(self):
        super().__init__()
        self.calls, self.sizes = [], []

    def prepare_data(self, train, run):
        self.calls.append("prepare_data")
        extra = train.subset(train.pids == 0)
        extra.camids = extra.camids.fill_(2)
        return train.concat(extra)

    def on_train_start(self, run):
        self.calls.append("on_train_start")
        self.sizes.append(len(run.train))

    def on_epoch_start(self, run):
        self.calls.append(f"epoch {run.epoch}")

    def transform_batch(self, batch, run):
        self.calls.append("transform_batch")
        return batch.cat(batch)  # augment: the batch twice

    def loss_terms(self, out, batch, run):
        assert len(out.features) == len(batch.pids)
        return {**run.standard_loss_terms(out, batch), "extra": out.features.pow(2).mean() * 0}

    def on_train_end(self, run):
        self.calls.append("on_train_end")


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return load_reid_data(tiny_root, (32, 16))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_deterministic_for_a_seed(tiny):
    a = _state(train(Plain(), tiny.train, tiny.num_train_ids, CONFIG, seed=5, show_progress=False))
    b = _state(train(Plain(), tiny.train, tiny.num_train_ids, CONFIG, seed=5, show_progress=False))
    c = _state(train(Plain(), tiny.train, tiny.num_train_ids, CONFIG, seed=6, show_progress=False))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_hooks_order_and_added_data(tiny, tmp_path):
    defense = Recording()
    config = TrainConfig(arch="osnet_x0_25", epochs=2, ids_per_batch=4, images_per_id=2)
    model = train(defense, tiny.train, tiny.num_train_ids, config, seed=0, show_progress=False,
                  log_path=tmp_path / "log.json")
    assert not model.training
    assert defense.calls[:3] == ["prepare_data", "on_train_start", "epoch 0"]
    assert defense.calls[-1] == "on_train_end" and "epoch 1" in defense.calls
    assert defense.calls.count("transform_batch") >= 2
    assert defense.sizes == [len(tiny.train) + int((tiny.train.pids == 0).sum())]
    log = (tmp_path / "log.json").read_text()
    assert '"extra"' in log and '"triplet"' in log


def test_batch_hard_mining():
    f = torch.tensor([[0.0], [1.0], [3.0], [3.5]])
    pids = torch.tensor([0, 0, 1, 1])
    d_ap, d_an = batch_hard(f, pids)
    assert torch.allclose(d_ap, torch.tensor([1.0, 1.0, 0.5, 0.5]), atol=1e-5)
    assert torch.allclose(d_an, torch.tensor([3.0, 2.0, 2.0, 2.5]), atol=1e-5)
    expected = torch.nn.functional.softplus(d_ap - d_an).mean()
    assert torch.allclose(soft_margin_triplet(f, pids), expected)
