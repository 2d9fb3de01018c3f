"""MID's training step on the ReID trainer: frozen teacher, attacker pool, meta-update.

``MetaInvariancePhase`` is built in ``on_train_start``: it fetches the teacher (the plain
model of the same data and seed) and its decoder stage, gives the student the teacher's
classifier head, frozen (the released script trains the student encoder alone under the
teacher's head), and binds the pool's attacks. Each ``step`` then

1. holds one pool member out at random (meta-test) and samples ``meta_train_attacks``
   of the others (meta-train; all of them by default, as the released script);
2. crafts those members' adversarial versions of the batch (``none`` = the clean batch),
   all at the current weights, as the released script crafts the whole pool first;
3. takes the shared first-order meta-update (``benchbench.reid.meta``): the meta-train
   loss is the sum over its members of the three consistency terms, the meta-test loss
   the same terms on the held-out member at the virtually stepped weights.
"""
from __future__ import annotations

import torch

from benchbench.errors import ConfigError
from benchbench.numerics import isolated_rng
from benchbench.reid.meta import first_order_meta_step
from benchbench.reid.models import load_model
from benchbench.reid.trainer import Batch, TrainState
from benchbench_mid.consistency import cyclic_kl, feature_kl
from benchbench_mid.decoder import decoder_stage, load_decoder

CLEAN = "none"


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    return module.eval().requires_grad_(False)


def adopt_head(student: torch.nn.Module, teacher: torch.nn.Module) -> None:
    """Copy the teacher's classifier into the student and freeze it there."""
    head, source = (getattr(m.backbone, "classifier", None) for m in (student, teacher))
    if not isinstance(head, torch.nn.Linear) or not isinstance(source, torch.nn.Linear):
        raise ConfigError(f"mid: architecture '{student.arch}' has no linear `classifier` head to share with "
                          f"the teacher; use a torchreid ResNet or OSNet (arch: resnet18, osnet_x0_25, ...)")
    with torch.no_grad():
        head.weight.copy_(source.weight)
        head.bias.copy_(source.bias)
    head.requires_grad_(False)


class MetaInvariancePhase:
    def __init__(self, defense, run: TrainState):
        p = self.p = defense.params
        if run.cache is None:
            raise ConfigError("mid needs the task's stage cache for its teacher and decoder: run it through "
                              "the reid-adversarial task")
        with isolated_rng():  # loading models initialises them first: keep the trainer's draws as they are
            reference = run.reference_stage()
            self.teacher = frozen(load_model(reference.path).to(run.device))
            stage = decoder_stage(p, defense.version, reference, run.train.images, run.cache, run.seed)
            self.decoder = frozen(load_decoder(stage.path).to(run.device))
        adopt_head(run.model, self.teacher)
        target = self.teacher if p.craft_against == "teacher" else None
        budget = {"eps": p.eps, "alpha": p.alpha, "steps": p.steps}
        self.attacks = {name: run.build_attack(name, budget, model=target)
                        for name in p.attack_pool if name != CLEAN}
        self.inner_lr = p.meta_lr if p.meta_lr is not None else run.config.lr

    def draw(self, generator: torch.Generator) -> tuple[list[str], str]:
        """(meta-train members, the held-out member) for one step."""
        pool = list(self.p.attack_pool)
        held_out = pool.pop(int(torch.randint(len(pool), (1,), generator=generator)))
        k = len(pool) if self.p.meta_train_attacks is None else min(self.p.meta_train_attacks, len(pool))
        order = torch.randperm(len(pool), generator=generator)[:k].sort().values
        return [pool[i] for i in order.tolist()], held_out

    def step(self, batch: Batch, run: TrainState) -> dict[str, float]:
        meta_train, held_out = self.draw(run.generator)
        adversarial = {name: batch.images if name == CLEAN else self.attacks[name](batch.images, batch.pids)
                       for name in [*meta_train, held_out]}
        with torch.no_grad():
            clean = self.teacher(batch.images)

        def loss(names: list[str]) -> torch.Tensor:
            return sum(self.consistency(adversarial[n], batch.pids, clean, run) for n in names)

        train_loss, test_loss = first_order_meta_step(
            list(run.model.parameters()), run.optimizer, lambda: loss(meta_train), lambda: loss([held_out]),
            self.inner_lr, self.p.meta_test_weight)
        return {"meta_train": train_loss, "meta_test": test_loss}

    def consistency(self, images: torch.Tensor, pids: torch.Tensor, clean: torch.Tensor,
                    run: TrainState) -> torch.Tensor:
        """Label + adversarial + cyclic consistency of the student on ``images``."""
        logits, features = run.model(images)
        p = self.p
        return (p.label_weight * run.config.ce_weight * run.ce(logits, pids)
                + p.feature_weight * feature_kl(features, clean)
                + p.cyclic_weight * cyclic_kl(features, clean, self.decoder, self.teacher))
