"""Test-time metric attacks on ReID query images (L-inf, [0, 1] images, eps in /255).

``none`` (the clean column), Bai et al.'s ``metric-fgsm``/``metric-ifgsm``/``metric-mifgsm``,
Bouniot et al.'s ``sma`` and ``fna``, Zheng et al.'s ``odfa``. Each component turns its
params into a ``torchattacks.Attack`` from ``methods`` (imported on first use, so
listing plugins does not load torch).
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

import benchbench
from benchbench.api import Params
from benchbench.reid.api import ReidInputAttack

__version__ = "1.0"


class EpsParams(Params):
    eps: float = Field(8.0, ge=0, le=255, description="L-inf budget in /255 units")


class IterativeParams(EpsParams):
    alpha: float = Field(1.0, gt=0, description="step size in /255 units")
    steps: int | None = Field(None, ge=1, description="iterations; null = the method's own default "
                                                       "(Bai/Zheng: min(eps + 4, 1.25 eps); Bouniot: 15)")


class NoAttack(ReidInputAttack):
    name = "none"
    description = "Clean queries: the reference column"

    def build(self, model, seed=0):
        import torchattacks

        return torchattacks.VANILA(model)


class _Iterative(ReidInputAttack):
    """Shared param handling: epsilons in /255 -> [0, 1] units, Bai's iteration rule.
    ``method`` names the ``torchattacks.Attack`` class in ``methods``."""

    Params = IterativeParams
    method: ClassVar[str]
    random_start: ClassVar[bool] = False
    momentum: ClassVar[float] = 0.0
    bouniot_steps: ClassVar[bool] = False  # Bouniot's code runs 15 iterations whatever eps

    def default_steps(self) -> int:
        from benchbench.reid.attack import bai_steps

        return 15 if self.bouniot_steps else bai_steps(self.params.eps)

    def method_kwargs(self) -> dict:
        return {"random_start": self.random_start, "momentum": self.momentum}

    def build(self, model, seed=0):
        from benchbench_reid_attacks import methods

        p = self.params
        return getattr(methods, self.method)(model, eps=p.eps / 255, alpha=p.alpha / 255,
                                             steps=p.steps or self.default_steps(), seed=seed,
                                             **self.method_kwargs())


class MetricIFGSM(_Iterative):
    name = "metric-ifgsm"
    version = "2"  # 2 (also metric-fgsm/-mifgsm): a query no longer guides itself; a lone one falls back to SMA
    uses_labels = True
    description = "Bai et al. metric I-FGSM: push the query from the other same-identity queries (f^, MSE)"
    method = "MetricIterative"


class MetricMIFGSM(MetricIFGSM):
    name = "metric-mifgsm"
    description = "Bai et al. metric MI-FGSM: I-FGSM with momentum 1 on the mean-|g|-normalised gradient"
    momentum = 1.0


class MetricFGSM(MetricIFGSM):
    name = "metric-fgsm"
    description = "Bai et al. metric FGSM: one eps-sized signed-gradient step from same-identity queries"
    Params = EpsParams

    def build(self, model, seed=0):
        from benchbench_reid_attacks.methods import MetricIterative

        eps = self.params.eps / 255
        return MetricIterative(model, eps=eps, alpha=eps, steps=1, seed=seed)


class SMA(_Iterative):
    name = "sma"
    description = "Self metric attack (Bouniot et al.): push f(x') from f(x), random start, label-free"
    method = "SelfMetricAttack"
    random_start = True
    bouniot_steps = True


class ODFA(_Iterative):
    name = "odfa"
    description = "Opposite-direction feature attack (Zheng et al.): pull f^(x') to -f^(x), label-free"
    method = "OppositeDirectionAttack"


class FNAParams(IterativeParams):
    pull: Literal["prototype", "feature"] = Field(
        "prototype", description="pull guide: farthest identity's mean feature (FNA) or farthest "
                                 "single feature of another identity (close to GOAT's in-batch guide)")
    push: bool = Field(True, description="keep the same-identity push term (false = FNA-pull)")
    random_start: bool = Field(False, description="start from a uniform point in the eps ball")


class FNA(_Iterative):
    name = "fna"
    uses_labels = True
    description = "Furthest-negative attack (Bouniot et al.): push from same identity, pull to the farthest one"
    Params = FNAParams
    method = "FurthestNegativeAttack"
    bouniot_steps = True

    def method_kwargs(self) -> dict:
        p = self.params
        return {"random_start": p.random_start, "pull": p.pull, "push": p.push}


@benchbench.hookimpl
def benchbench_attacks():
    return [NoAttack, MetricFGSM, MetricIFGSM, MetricMIFGSM, SMA, ODFA, FNA]
