"""CleanCLIP (Bansal et al., ICCV 2023): after standard pre-training on the poisoned
pairs, fine-tune on trusted clean pairs with the CLIP loss plus an in-modal loss.

Read from nishadsinghi/CleanCLIP (``src/train.py``, ``src/parser.py``, README):
``L = clip_weight * L_CLIP + inmodal_weight * L_inmodal``, where
``L_inmodal = 1/2 [CE(tau Z_I Z~_I^T) + CE(tau Z_T Z~_T^T)]`` contrasts each embedding
with its augmented view (AutoAugment images as CyCLIP's ``augment_image.py``, EDA
captions); fine-tuning runs 10 epochs at lr 1e-5 (batch 64, 100K clean pairs) after
pre-training at 5e-4. The clean pairs are the task's trusted held-out pairs
(``n_clean``); the pre-training phase is the protocol's standard CLIP training.

The paper's ablations (fine-tuning with the in-modal loss alone, or with the
CLIP loss alone) are the variants ``clip_weight: 0`` and ``inmodal_weight: 0``: the most
direct test of whether a clean fine-tune removes a trigger by itself or only with the
in-modal term. A zero-weight term is not computed (``inmodal_weight: 0`` draws no views).
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from torch import Tensor

import benchbench
from benchbench.clip.api import ClipDefense
from benchbench.clip.augment import AugmentParams, ImageAugmentation, augment_batch
from benchbench.clip.inmodal import inmodal_loss
from benchbench.clip.model import Features
from benchbench.clip.trainer import Batch, Phase, TrainConfig, TrainState

FINETUNE = "finetune"


class CleanCLIP(ClipDefense):
    name = "cleanclip"
    version = "1"
    description = "CleanCLIP: standard pre-training, then fine-tuning on clean pairs with CLIP + in-modal losses"

    class Params(AugmentParams):
        image_augmentation: ImageAugmentation = Field("autoaugment", description="image views for the in-modal loss: "
                                                                   "'autoaugment' (CleanCLIP), 'simclr' or 'none'")
        finetune_epochs: int = Field(10, ge=1, description="fine-tuning epochs on the clean pairs")
        finetune_lr: float = Field(1e-5, gt=0, description="fine-tuning peak lr (CleanCLIP: 1e-5 after "
                                                           "pre-training at 5e-4)")
        clip_weight: float = Field(1.0, ge=0, description="weight of the CLIP loss while fine-tuning")
        inmodal_weight: float = Field(1.0, ge=0, description="weight of the in-modal loss while fine-tuning")

        @model_validator(mode="after")
        def _some_loss(self) -> "CleanCLIP.Params":
            if self.clip_weight == 0 and self.inmodal_weight == 0:
                raise ValueError("clip_weight and inmodal_weight are both 0, so fine-tuning has no loss; set one "
                                 "of them > 0 (0 for the other one is CleanCLIP's ablation)")
            return self

    presets: ClassVar = {
        "smoke": {"finetune_epochs": 1, "finetune_lr": 1e-4, "augment_group": 16},
        # the protocol pre-trains at 5e-3: the paper's fine-tune/pre-train lr ratio (1/50) gives 1e-4
        "default": {"finetune_lr": 1e-4, "augment_group": 16},
        "paper": {},
    }

    def standard_prefix(self, config: TrainConfig, n_pairs: int) -> int:
        """Its pre-training phase is standard CLIP: it fine-tunes the ``none`` model."""
        return config.epochs if self.trains_as(CleanCLIP) else 0

    def phases(self, config: TrainConfig) -> list[Phase]:
        p = self.params
        return [Phase("train", config.epochs), Phase(FINETUNE, p.finetune_epochs, data="clean", lr=p.finetune_lr)]

    def augment(self, batch: Batch, state: TrainState) -> Batch:
        if state.phase.name == FINETUNE and self.params.inmodal_weight > 0:
            self.view = augment_batch(batch, state, self.params)
        return batch

    def loss(self, batch: Batch, features: Features, state: TrainState) -> dict[str, Tensor]:
        terms = super().loss(batch, features, state)
        if state.phase.name != FINETUNE:
            return terms
        p = self.params
        out = {"clip": p.clip_weight * terms["clip"]} if p.clip_weight > 0 else {}
        if p.inmodal_weight > 0:
            view = state.model.encode(self.view.images, self.view.tokens)
            out["inmodal"] = p.inmodal_weight * inmodal_loss(features.image, view.image, features.text, view.text,
                                                             features.logit_scale)
        return out


@benchbench.hookimpl
def benchbench_defenses() -> list[type]:
    return [CleanCLIP]
