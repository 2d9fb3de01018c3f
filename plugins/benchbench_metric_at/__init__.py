"""Defense ``metric-at``: online metric adversarial training, GOAT style (Bouniot et al.).

Every training batch is replaced by its adversarial version: PGD with a random start
that pushes each image away from the batch's other images of its identity and pulls
it toward the farthest feature of another identity (the registered ``fna`` attack with
``pull="feature"``, bound to the model being trained). The loss is cross-entropy plus
the soft-margin triplet softplus(d_ap - d_an) with batch-hard mining.

GOAT trains at eps 5 with 7 steps of 1/255 from the first batch (the ``paper``
preset). Our ``default`` preset is a CPU budget: 3 steps, and the budget ramps up
linearly over the first half of training (``eps_warmup``), because a from-scratch
model trained on full-strength adversarial batches from the start barely learned in
10 epochs (measured on the synthetic set: training CE stalled at 4.2 vs 2.5 clean).
Both are our choices, not GOAT's.

Measured on the synthetic set (``benchmarks/reid_budget.py``, 3 seeds): this preset
keeps 1.62x the undefended model's mAP under SMA and metric I-FGSM after the default
10 epochs, 1.68x / 1.87x after 20 and 1.67x / 1.87x after 40, at no clean-mAP cost.
``benchmarks/reid_at_variants.py`` screens ten changes to the training attack, the
loss and the batch on one seed; the two that beat this preset (5 steps of 2/255;
clean and adversarial batches together, which is not GOAT's replaced batch) gain at
most 0.04 mAP under SMA and 0.016 under I-FGSM, short of 2x.
"""
from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from pydantic import Field

import benchbench
from benchbench.api import Params
from benchbench.reid.api import ReidDefense

__version__ = "1.0"


class MetricAT(ReidDefense):
    name = "metric-at"
    description = "Online metric adversarial training (GOAT): push/pull PGD batches, soft-margin triplet + CE"

    class Params(Params):
        eps: float = Field(8.0, ge=0, le=255, description="training perturbation budget (L-inf, /255 units)")
        alpha: float = Field(3.0, gt=0, description="PGD step size (/255 units)")
        steps: int = Field(3, ge=1, description="PGD iterations per batch")
        eps_warmup: float = Field(0.5, ge=0, le=1, description=(
            "fraction of the epochs over which eps and the step size ramp up linearly from 0"))

    presets: ClassVar = {
        "smoke": {"steps": 1, "alpha": 8.0},
        "paper": {"eps": 5.0, "alpha": 1.0, "steps": 7, "eps_warmup": 0.0},
    }

    TRAINING_ATTACK = "fna"

    def trained_against(self) -> tuple[str, ...]:
        return (self.TRAINING_ATTACK,)  # its fna columns are not a generalisation test

    def on_train_start(self, run) -> None:
        p = self.params
        self.attack = run.build_attack(self.TRAINING_ATTACK, {"eps": p.eps, "alpha": p.alpha, "steps": p.steps,
                                                  "pull": "feature", "random_start": True})

    def on_epoch_start(self, run) -> None:
        ramp = self.params.eps_warmup * run.config.epochs
        scale = min(1.0, (run.epoch + 1) / ramp) if ramp > 0 else 1.0
        self.attack.eps = self.params.eps / 255 * scale
        self.attack.alpha = self.params.alpha / 255 * scale

    def transform_batch(self, batch, run):
        return replace(batch, images=self.attack(batch.images, batch.pids))

    def loss_terms(self, out, batch, run):
        from benchbench.reid.losses import soft_margin_triplet

        return {"ce": run.config.ce_weight * run.ce(out.logits, batch.pids),
                "triplet": run.config.triplet_weight * soft_margin_triplet(out.features, batch.pids)}


@benchbench.hookimpl
def benchbench_defenses():
    return [MetricAT]
