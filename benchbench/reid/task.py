"""The ReID adversarial track: train once per (defense, seed), attack the queries, rank.

A cell is (defense, attack, seed). Its model is a stage keyed by the data, the task's
training protocol, the defense and the seed, so a grid trains each (defense, seed) once
and every attack column reuses it; the clean gallery's embeddings are a stage of that
model too. Only the attack on the queries is per cell.

This module is the ``reid-track`` entry point and stays torch-free at import; the work
is in ``benchbench.reid.pipeline``.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

import benchbench
from benchbench.api import Params, Task
from benchbench.reid.api import TRACK


class ReidAdversarialTask(Task):
    name = "reid-adversarial"
    track = TRACK
    version = "1"
    description = "Person ReID under test-time metric attacks on the queries (mAP, CMC)"

    class Params(Params):
        data_root: str | None = Field(
            None, description="a Market-1501/DukeMTMC-reID-layout folder; null = the embedded synthetic set")
        layout: Literal["market1501", "dukemtmcreid"] = Field(
            "market1501", description="file-name conventions of data_root (junk ids, camera range)")
        height: int = Field(64, ge=16, description="image height the data is resized to")
        width: int = Field(32, ge=8, description="image width the data is resized to")
        syn_train_ids: int = Field(100, ge=4, description="synthetic: training identities")
        syn_test_ids: int = Field(80, ge=2, description="synthetic: test identities (query + gallery)")
        syn_cameras: int = Field(4, ge=2, le=6, description="synthetic: cameras")
        syn_mean_images: float = Field(12.0, ge=3, description="synthetic: mean images per identity (long-tailed)")
        syn_seed: int = Field(0, description="synthetic: generator seed (the data set, not the cell seed)")
        arch: str = Field("resnet18", description="torchreid architecture name")
        weights: str | None = Field(None, description="local checkpoint to start from (.pth or .safetensors)")
        epochs: int = Field(10, ge=1, description="training epochs")
        lr: float = Field(2e-3, gt=0, description="Adam learning rate (cosine-annealed)")
        weight_decay: float = Field(5e-4, ge=0, description="Adam weight decay")
        batch_ids: int = Field(8, ge=2, description="identities per batch (P)")
        batch_images_per_id: int = Field(4, ge=2, description="images per identity in a batch (K)")
        margin: float = Field(0.3, ge=0, description="batch-hard triplet margin")

    presets: ClassVar = {
        "smoke": {"syn_train_ids": 12, "syn_test_ids": 8, "syn_mean_images": 6, "syn_cameras": 3,
                  "epochs": 1, "batch_ids": 4, "height": 32, "width": 16, "arch": "osnet_x0_25"},
        "paper": {"height": 256, "width": 128, "arch": "resnet50", "epochs": 60, "lr": 3.5e-4,
                  "batch_ids": 16, "syn_train_ids": 751, "syn_test_ids": 750},
    }

    def dataset_name(self) -> str:
        root = self.params.data_root
        return Path(root).name if root else "synthetic-market"

    def model_name(self) -> str:
        return self.params.arch

    def run(self, cell, ctx) -> dict[str, dict[str, float]]:
        from benchbench.reid.pipeline import run_cell

        return run_cell(self, cell, ctx)


@benchbench.hookimpl
def benchbench_tasks():
    return [ReidAdversarialTask]
