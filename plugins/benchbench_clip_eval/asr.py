"""Attack success rate: zero-shot predictions on the attack's probe.

The probe (written by the attack) lists evaluation test rows and the class each should
be pushed to. For backdoors these are all test images whose true class is not the target
(the protocol of vsahil/attack-cleanclip), triggered by the attack itself; CleanCLIP's
public zero-shot code never compares predictions with the target index, which this does.
``asr_clean`` is the same probe on the model the same defense trained without poison:
the rate at which the probe "succeeds" with no attack at all.
"""
from __future__ import annotations

import torch

from benchbench.api import RATE, Metric
from benchbench.clip.api import ClipEvaluator, EvalInputs
from benchbench.clip.model import ClipModel


class AttackSuccess(ClipEvaluator):
    name = "asr"
    description = "attack success rate of the cell's attack (targeted or backdoor), and its clean base rate"
    metrics = (Metric("asr", False, "fraction of probe images predicted as their attack target",
                      role="robustness", **RATE),
               Metric("asr_clean", False, "the same probe on the model trained on clean data (base rate)",
                      role="diagnostic", **RATE))  # the probe's base rate: it ranks no defense

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        probe = inputs.probe
        if probe is None:  # the clean column: nothing to attack
            return {}
        images = inputs.test.images[list(probe.indices)]
        if probe.triggered:
            images = inputs.attack.apply_trigger(images, torch.Generator().manual_seed(inputs.seed))
        targets = torch.tensor(probe.targets)

        def rate(model: ClipModel) -> float:
            return (inputs.zero_shot_logits(images, model).argmax(dim=1) == targets).float().mean().item()

        out = {"asr": rate(inputs.model)}
        clean = inputs.clean_model()
        if clean is not None:
            out["asr_clean"] = rate(clean)
        return out
