"""Defense ``metric-at``: online metric adversarial training, GOAT style (Bouniot et al.).

Every training batch is replaced by its adversarial version: PGD with a random start
that pushes each image away from the batch's other images of its identity and pulls
it toward the farthest feature of another identity (the registered ``fna`` attack with
``pull="feature"``, bound to the model being trained). The loss is cross-entropy plus
the soft-margin triplet softplus(d_ap - d_an) with batch-hard mining.

GOAT trains at eps 5 with 7 steps of 1/255 (the ``paper`` preset). The ``default``
preset trains at the benchmark's test budget (eps 8) with 3 steps of 3/255 so a CPU
training stays within minutes; that is our choice, weaker than GOAT's inner attack.
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

    presets: ClassVar = {
        "smoke": {"steps": 1, "alpha": 8.0},
        "paper": {"eps": 5.0, "alpha": 1.0, "steps": 7},
    }

    def on_train_start(self, run) -> None:
        p = self.params
        self.attack = run.build_attack("fna", {"eps": p.eps, "alpha": p.alpha, "steps": p.steps,
                                                  "pull": "feature", "random_start": True})

    def transform_batch(self, batch, run):
        return replace(batch, images=self.attack(batch.images, batch.pids))

    def loss_terms(self, out, batch, run):
        from benchbench.reid.losses import soft_margin_triplet

        return {"ce": run.config.ce_weight * run.ce(out.logits, batch.pids),
                "triplet": run.config.triplet_weight * soft_margin_triplet(out.features, batch.pids)}


@benchbench.hookimpl
def benchbench_defenses():
    return [MetricAT]
