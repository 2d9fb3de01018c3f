"""metric-at's schedule, loss and adversarial batches, and the variants its screen trains."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchbench.registry import load_registry
from benchbench.reid.trainer import Batch, Output, TrainConfig
from benchbench.testing import check_component_runs


def fake_run(epochs: int):
    return SimpleNamespace(config=TrainConfig(epochs=epochs), epoch=0,
                           ce=lambda logits, pids: torch.nn.functional.cross_entropy(logits, pids))


def test_metric_at_warms_up_its_budget(registry):
    defense = registry.get("defense", "reid", "metric-at")({"eps": 8.0, "alpha": 2.0, "eps_warmup": 0.5})
    defense.attack = SimpleNamespace(eps=None, alpha=None)
    run = fake_run(epochs=10)
    seen = []
    for epoch in range(10):
        run.epoch = epoch
        defense.on_epoch_start(run)
        seen.append(round(defense.attack.eps * 255, 3))
    assert seen == [1.6, 3.2, 4.8, 6.4, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    assert defense.attack.alpha == pytest.approx(2 / 255)
    paper = registry.get("defense", "reid", "metric-at")(preset="paper")
    paper.attack = SimpleNamespace(eps=None, alpha=None)
    paper.on_epoch_start(run)
    assert paper.attack.eps == pytest.approx(5 * 0.225 / 255)  # GOAT: full budget from the start


def test_metric_at_paper_preset_is_goats_normalised_budget_and_ce_loss(registry):
    """GOAT's eps 5/255 and step 1/255 are in ImageNet-normalised space: x std in pixels.
    Its defended models train with cross-entropy alone."""
    paper = registry.get("defense", "reid", "metric-at")(preset="paper")
    p = paper.params
    assert (p.eps, p.alpha, p.steps) == (pytest.approx(1.125), pytest.approx(0.225), 7)
    pids = torch.tensor([0, 0, 1, 1])
    out = Output(logits=torch.zeros(4, 2), features=torch.tensor([[0.0], [1.0], [3.0], [3.5]]))
    assert set(paper.loss_terms(out, Batch(torch.zeros(4, 3, 8, 4), pids, pids), fake_run(1))) == {"ce"}
    triplet = registry.get("defense", "reid", "metric-at")({"loss": "triplet"})
    assert set(triplet.loss_terms(out, Batch(torch.zeros(4, 3, 8, 4), pids, pids), fake_run(1))) == {"triplet"}


def test_metric_at_loss_is_soft_margin_triplet_plus_ce(registry):
    defense = registry.get("defense", "reid", "metric-at")()
    pids = torch.tensor([0, 0, 1, 1])
    out = Output(logits=torch.zeros(4, 2), features=torch.tensor([[0.0], [1.0], [3.0], [3.5]]))
    terms = defense.loss_terms(out, Batch(torch.zeros(4, 3, 8, 4), pids, pids), fake_run(1))
    assert set(terms) == {"ce", "triplet"}
    assert terms["ce"].item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    d_ap, d_an = torch.tensor([1.0, 1.0, 0.5, 0.5]), torch.tensor([3.0, 2.0, 2.0, 2.5])
    assert terms["triplet"].item() == pytest.approx(torch.nn.functional.softplus(d_ap - d_an).mean().item(), rel=1e-5)


def test_metric_at_trains_on_adversarial_batches(registry, tiny_root):
    """One smoke training: every batch the loss sees was moved by the attack, within eps."""
    from benchbench.reid.data import load_reid_data
    from benchbench.reid.trainer import train

    data = load_reid_data(tiny_root, (32, 16))
    cls = registry.get("defense", "reid", "metric-at")

    class Spy(cls):
        def on_train_start(self, run):
            super().on_train_start(run)
            self.moved = []

        def transform_batch(self, batch, run):
            adv = super().transform_batch(batch, run)
            self.moved.append(float((adv.images - batch.images).abs().max()))
            return adv

    spy = Spy({"eps": 4.0, "alpha": 2.0, "steps": 2, "eps_warmup": 0.0})
    train(spy, data.train, data.num_train_ids, TrainConfig(arch="osnet_x0_25", epochs=1, ids_per_batch=4,
                                                          images_per_id=2), seed=0, show_progress=False)
    assert spy.moved and all(0 < m <= 4 / 255 + 1e-6 for m in spy.moved)


VARIANTS = Path(__file__).resolve().parents[2] / "benchmarks" / "reid_at_variants.py"


@pytest.mark.parametrize("name", ["metric-at-no-ce", "metric-at-hard-triplet", "metric-at-bn-train",
                                  "metric-at-self-push", "metric-at-mixed", "metric-at-clean-pull"])
def test_metric_at_variants_of_the_screen_train(name, reid_context):
    """The variants `benchmarks/reid_at_variants.py` screens load as a --plugin file and
    each trains and is attacked in a smoke cell."""
    registry = load_registry([str(VARIANTS)], strict=True)
    cls = registry.get("defense", "reid", name)
    result = check_component_runs(cls, registry=registry, attack="sma", cache_root=reid_context.ctx.cache.root)
    assert result["stages"].get("reid-model:build") == 1
