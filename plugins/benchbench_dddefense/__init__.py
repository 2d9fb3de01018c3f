"""DDDefense: the debiased dual-invariant defense for person ReID (Zhou et al., AAAI 2026),
as we read it (the paper's full text and code were not public; see ALGORITHMS.md).

Two phases, each with an ablation switch:

1. ``balance``: an identity- and camera-conditioned diffusion model (``benchbench.reid.diffusion``),
   trained once per data set and cached as a stage, generates images for identities
   with fewer than ``delta1`` images and for the under-seen cameras of identities whose
   largest camera share exceeds ``delta2`` (``balancing``). They are written as a
   Market-1501-layout extension of the training set (a second cached stage, shared by
   every seed and ablation). An identity-preservation gate (``gate``) keeps only the
   images that the plain model of the same seed (the ``none`` cell's model) ranks as
   their intended identity, capped at ``max_synthetic_share`` of each identity; the kept
   images are added to training.
2. ``self_meta`` on top of metric adversarial training with FNES (``fnes``): each step
   splits the batch's identities and the ``attack_pool`` into meta-train/meta-test and
   seen/held-out halves and makes a first-order meta-update (``meta``), with the
   clean-feature consistency term. With ``self_meta: false`` every batch is simply
   replaced by its FNA-attacked version and trained with the FNES loss.

This module is only the wiring; the plugin also provides the ``reid-bias`` evaluator.
"""
from __future__ import annotations

from typing import ClassVar

from pathlib import Path

from pydantic import Field, field_validator

import benchbench
from benchbench.api import Params
from benchbench.reid.api import ReidDefense
from benchbench_dddefense.bias import ReidBias

__version__ = "1.0"


class DDDefense(ReidDefense):
    name = "dddefense"
    version = "2"  # 2: identity-preservation gate; the trainer's RNG no longer depends on cached stages
    description = ("Debiased dual-invariant defense: diffusion data balancing + FNES metric adversarial "
                   "training with adversarially-enhanced self-meta learning")

    class Params(Params):
        balance: bool = Field(True, description="phase 1: add diffusion-generated images of rare identities/cameras")
        self_meta: bool = Field(True, description="phase 2: self-meta update over identity and attack splits")
        delta1: int = Field(10, ge=0, description="balancing: minimum images per identity")
        delta2: float = Field(0.5, gt=0, le=1, description="balancing: maximum share of an identity's images "
                                                           "from one camera (>= 1/number of cameras)")
        identity_gate: bool = Field(True, description="keep a generated image only if the plain model of the "
                                                      "same seed ranks its intended identity first")
        max_synthetic_share: float = Field(0.5, ge=0, le=1, description="most share of an identity's training "
                                                                        "images that may be generated (a rule)")
        diffusion_path: str | None = Field(
            None, description="a generator folder saved by benchbench.reid.diffusion.save (diffusers "
                              "unet/ + condition.safetensors + diffusion.json, e.g. trained on a GPU); "
                              "null = train one on the training set (cached)")
        diffusion_size: tuple[int, int] = Field((32, 16), description="(height, width) the diffusion UNet works at")
        diffusion_channels: tuple[int, ...] = Field((32, 64, 64), description="UNet block widths")
        diffusion_steps: int = Field(1200, ge=1, description="diffusion training steps")
        diffusion_batch: int = Field(32, ge=1, description="diffusion training batch size")
        diffusion_lr: float = Field(1e-3, gt=0, description="diffusion AdamW learning rate")
        sampling_steps: int = Field(25, ge=1, description="DDIM sampling steps")
        guidance: float = Field(3.0, ge=1, description="classifier-free guidance scale on the identity")
        diffusion_seed: int = Field(0, description="seed of the generator and its samples (shared by all cells)")
        eps: float = Field(8.0, ge=0, le=255, description="training perturbation budget (L-inf, /255 units)")
        alpha: float = Field(3.0, gt=0, description="inner PGD step size (/255 units)")
        steps: int = Field(3, ge=1, description="inner PGD iterations")
        fnes_temperature: float = Field(
            0.1, gt=0, description="FNES softening, relative to each anchor's mean negative distance "
                                   "(-> 0: hardest negative; large: mean negative)")
        attack_pool: list[str] = Field(
            ["fna", "sma"], min_length=1, description="registered ReID attacks (iterative: eps/alpha/steps) "
                                                      "the self-meta phase draws seen and held-out attacks from")
        meta_train_ratio: float = Field(0.5, gt=0, lt=1, description="share of a batch's identities in meta-train")
        seen_ratio: float = Field(0.5, gt=0, lt=1, description="share of the attack pool seen in the inner step")
        meta_lr: float = Field(0.05, gt=0, description="SGD step size of the virtual inner (meta-train) update "
                                                       "(0.05: about the size of an Adam step at lr 2e-3 early in training)")
        meta_test_weight: float = Field(1.0, ge=0, description="weight of the meta-test gradient")
        self_weight: float = Field(1.0, ge=0, description="weight of the clean/adversarial feature consistency")
        ce_weight: float = Field(1.0, ge=0, description="weight of the classifier's cross-entropy on attacked "
                                                        "images, times the task's (ablation: 0 leaves robustness "
                                                        "to the metric terms)")

        @field_validator("diffusion_path")
        @classmethod
        def _is_generator_folder(cls, value: str | None) -> str | None:
            """Checked when the config is read, not after the other cells have trained."""
            if value is None:
                return value
            folder = Path(value).expanduser()
            if not folder.is_dir():
                raise ValueError(f"{folder} is not a folder; give a generator folder saved by "
                                 f"benchbench.reid.diffusion.save, or leave it unset")
            missing = [f for f in ("diffusion.json", "condition.safetensors", "unet/config.json")
                       if not (folder / f).is_file()]
            if missing:
                raise ValueError(f"{folder} is not a saved dddefense generator (no {', '.join(missing)}); give "
                                 f"a folder saved by benchbench.reid.diffusion.save, or leave it unset")
            return value

    presets: ClassVar = {
        "smoke": {"diffusion_size": (16, 8), "diffusion_channels": (16, 32), "diffusion_steps": 10,
                  "sampling_steps": 2, "steps": 1, "alpha": 8.0, "delta1": 6},
        "paper": {"diffusion_size": (128, 64), "diffusion_channels": (64, 128, 256, 256),
                  "diffusion_steps": 100_000, "diffusion_batch": 64, "diffusion_lr": 2e-4, "sampling_steps": 50,
                  "eps": 5.0, "alpha": 1.0, "steps": 7},
    }

    def prepare_data(self, train, run):
        if not self.params.balance:
            return train
        from benchbench_dddefense.phases import balanced_training_set

        return balanced_training_set(self, train, run)

    def on_train_start(self, run) -> None:
        from benchbench_dddefense.phases import AdversarialPhase

        self.phase = AdversarialPhase(self.params, run)

    def train_step(self, batch, run):
        return self.phase.step(batch, run)

    def state_dict(self) -> dict:
        """The phase-2 attacks' generators (the meta-splits draw from the trainer's
        generator, which the trainer saves itself)."""
        return self.phase.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.phase.load_state_dict(state)

    def trained_against(self) -> list[str]:
        """The attacks its training runs: the self-meta pool, or FNES's FNA without self-meta."""
        return list(self.params.attack_pool) if self.params.self_meta else ["fna"]


@benchbench.hookimpl
def benchbench_defenses():
    return [DDDefense]


@benchbench.hookimpl
def benchbench_evaluators():
    return [ReidBias]
