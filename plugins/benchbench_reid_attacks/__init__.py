"""Test-time metric attacks on ReID query images (L-inf, [0, 1] images, eps in /255).

``none`` (the clean column), Bai et al.'s ``metric-fgsm``/``metric-ifgsm``/``metric-mifgsm``
(on the queries, or with ``perturb: gallery`` on the gallery as in Bai's main setting),
``pgd`` (their objective under Madry's PGD), Bouniot et al.'s ``sma`` and ``fna``, Zheng
et al.'s ``odfa``, a universal perturbation ``uap`` and the black-box wrapper
``blackbox-transfer`` (any of these crafted on a surrogate model). Each component turns its
params into a ``torchattacks.Attack`` from ``methods`` (imported on first use, so
listing plugins does not load torch).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

import benchbench
from benchbench.api import Params
from benchbench.errors import ConfigError
from benchbench.reid.api import ReidInputAttack

__version__ = "1.0"


class EpsParams(Params):
    eps: float = Field(8.0, ge=0, le=255, description="L-inf budget in /255 units")


class IterativeParams(EpsParams):
    alpha: float = Field(1.0, gt=0, description="step size in /255 units")
    steps: int | None = Field(None, ge=1, description="iterations; null = the method's own default "
                                                       "(Bai/Zheng: min(eps + 4, 1.25 eps); Bouniot: 15)")


class PerturbParams(Params):
    perturb: Literal["query", "gallery"] = Field(
        "query", description="split to perturb: the queries (guided by the other queries of their identity) "
                             "or the gallery (guided by the queries of its identity; reads gallery labels; Bai)")


class BaiParams(IterativeParams, PerturbParams):
    pass


class BaiFGSMParams(EpsParams, PerturbParams):
    pass


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
    """Bai et al., "Adversarial Metric Attack and Defense for Person Re-identification"
    (TPAMI 2020; SongBaiHust/Adversarial_Metric_Attack ``Gen_Adv.py``). ``perturb:
    gallery`` is the paper's main setting: each gallery image is pushed from the clean
    features of the queries of its identity; distractors (no such query) stay clean."""

    name = "metric-ifgsm"
    version = "2"  # 2 (also metric-fgsm/-mifgsm): a query no longer guides itself; a lone one falls back to SMA
    uses_labels = True
    description = "Bai et al. metric I-FGSM: push the query from the other same-identity queries (f^, MSE)"
    method = "MetricIterative"
    Params = BaiParams
    added_params = ("perturb",)  # after version 2's results: at its default, keys stay as they were


class MetricMIFGSM(MetricIFGSM):
    name = "metric-mifgsm"
    description = "Bai et al. metric MI-FGSM: I-FGSM with momentum 1 on the mean-|g|-normalised gradient"
    momentum = 1.0


class MetricFGSM(MetricIFGSM):
    name = "metric-fgsm"
    description = "Bai et al. metric FGSM: one eps-sized signed-gradient step from same-identity queries"
    Params = BaiFGSMParams

    def build(self, model, seed=0):
        from benchbench_reid_attacks.methods import MetricIterative

        eps = self.params.eps / 255
        return MetricIterative(model, eps=eps, alpha=eps, steps=1, seed=seed)


class PGDParams(BaiParams):
    alpha: float = Field(2.0, gt=0, description="step size in /255 units (torchattacks' PGD default)")
    steps: int = Field(10, ge=1, description="iterations (torchattacks' PGD default)")


class PGD(MetricIFGSM):
    """Madry et al.'s PGD on Bai's metric objective: our design, for the "PGD robustness"
    DDDefense (Zhou et al., arXiv 2511.09933) reports without public code. Bai's guided
    objective (``metric-ifgsm``) with PGD's uniform random start in the eps ball and
    torchattacks' ``PGD`` defaults (eps 8/255, step 2/255, 10 steps)."""

    name = "pgd"
    version = "1"
    description = "Metric PGD: Bai's same-identity push (f^, MSE) from a random start, 10 steps of 2/255"
    Params = PGDParams
    random_start = True


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
    pull: Literal["prototype", "feature", "none"] = Field(
        "prototype", description="pull guide: farthest identity's mean feature (FNA), farthest single "
                                 "feature of another identity (close to GOAT's in-batch guide), or none "
                                 "(push only: GOAT's push-only training attack)")
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


class UAPParams(EpsParams):
    alpha: float = Field(1.0, gt=0, description="step size per mini-batch in /255 units")
    epochs: int = Field(3, ge=1, description="passes over the training set to fit the perturbation")
    batch_size: int = Field(64, ge=1, description="training images per signed-gradient step")


class UAP(ReidInputAttack):
    """A universal adversarial perturbation: one ``delta`` added to every query, fitted on
    the training identities and applied to the unseen test ones. Li et al., "Universal
    Adversarial Perturbations Against Person Re-Identification" (arXiv 1910.14184;
    no public code found) attack ReID this way with a ranking loss; Moosavi-Dezfooli et
    al.'s UAP (CVPR 2017, LTS4/universal) is DeepFool-based and needs classes. Ours
    (our design): SGD-UAP (Shafahi et al., AAAI 2020) on a label-free objective, Bai's
    normalised feature distance to the clean feature, from a random start."""

    name = "uap"
    description = "Universal perturbation: one delta for all queries, fitted on the training identities (f^ push)"
    Params = UAPParams
    presets: ClassVar = {"smoke": {"epochs": 1}}

    def prepare(self, context) -> None:
        self.train = context.train.images

    def build(self, model, seed=0):
        from benchbench_reid_attacks.methods import UniversalPerturbation

        train = getattr(self, "train", None)
        if train is None:
            raise ConfigError("uap is fitted on the training images: call prepare(AttackContext) before build")
        p = self.params
        return UniversalPerturbation(model, eps=p.eps / 255, alpha=p.alpha / 255, epochs=p.epochs,
                                     train_images=train, seed=seed, batch_size=p.batch_size)


class TransferParams(Params):
    attack: str = Field("metric-ifgsm", description="the white-box attack crafted on the surrogate")
    attack_params: dict[str, Any] = Field(default_factory=dict, description="params of that attack")
    surrogate: str = Field("osnet_x0_25", description=(
        "surrogate architecture (torchreid name), trained by the task's protocol with no defense; "
        "must differ from the target's"))


class Transfer(ReidInputAttack):
    """Black-box transfer: the attack never queries the target. A registered attack is
    crafted on a surrogate, the undefended model of another architecture trained by the
    same protocol (from the stage cache), and its images are given to the target. The
    protocol of MIS-RANKING (Wang et al., "Transferable, Controllable, and Inconspicuous
    Adversarial Attacks on Person Re-identification With Deep Mis-Ranking", CVPR 2020;
    whj363636/Adversarial-attack-on-Person-ReID-With-Deep-Mis-Ranking), whose
    cross-model columns attack one architecture and rank with another; the crafting
    attack here is one of ours, not their GAN."""

    name = "blackbox-transfer"
    uses_labels = True  # as the wrapped attack does; declared for the default (metric-ifgsm)
    description = "Black-box transfer: an attack crafted on a surrogate architecture, applied to the target"
    Params = TransferParams
    presets: ClassVar = {"smoke": {"surrogate": "resnet18"}}  # the smoke target is osnet_x0_25

    def inner(self) -> ReidInputAttack:
        from benchbench.registry import load_registry

        p = self.params
        if p.attack == self.name:
            raise ConfigError("blackbox-transfer cannot wrap itself: set attack to a white-box attack (e.g. metric-ifgsm)")
        return load_registry().get("attack", self.track, p.attack)(p.attack_params)

    def perturbs(self):
        return self.inner().perturbs()

    def prepare(self, context) -> None:
        self.context = context

    def build(self, model, seed=0):
        inner = self.inner()
        inner.prepare(self.context)
        return inner.build(self.context.surrogate(self.params.surrogate), seed=seed)


@benchbench.hookimpl
def benchbench_attacks():
    return [NoAttack, MetricFGSM, MetricIFGSM, MetricMIFGSM, PGD, SMA, ODFA, FNA, UAP, Transfer]
