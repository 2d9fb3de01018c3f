"""The ReID adversarial track: train once per (defense, seed), attack the queries, rank.

A cell is (defense, attack, seed). Its model is a stage keyed by the data, the task's
training protocol, the defense and the seed, so a grid trains each (defense, seed) once
and every attack column reuses it; the clean gallery's embeddings are a stage of that
model too. Only the attack on the queries is per cell.

The cross-data-set protocol (``eval_data``) trains on one data set and ranks the
queries and gallery of another, clean and attacked: the usual Market-1501 -> DukeMTMC-reID
generalisation test. The model stage does not depend on ``eval_data``, so a transfer
grid reuses the models its training data set's own grid trained.

This module is the ``reid-track`` entry point and stays torch-free at import; the work
is in ``benchbench.reid.pipeline``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError, model_validator

import benchbench
from benchbench.api import Params, Task
from benchbench.reid.api import TRACK
from benchbench.reid.layouts import CAMERAS, SHORT, Layout

#: The params that say which data set is read: what ``eval_data`` may replace.
DATA_PARAMS = ("data_root", "layout", "syn_train_ids", "syn_test_ids", "syn_cameras", "syn_mean_images",
               "syn_seed")
#: Params a trained model does not depend on: left out of the model stage's key.
EVALUATION_ONLY = ("eval_data", "data_name")


class ReidAdversarialTask(Task):
    name = "reid-adversarial"
    track = TRACK
    version = "1"
    description = "Person ReID under test-time metric attacks on the queries (mAP, CMC)"

    class Params(Params):
        data_root: str | None = Field(
            None, description="a Market-1501, DukeMTMC-reID or MSMT17 folder (docs/data.md); null = the "
                              "embedded synthetic set")
        layout: Layout = Field(
            "market1501", description="layout of data_root: market1501, dukemtmcreid (file-name conventions: "
                                      "junk ids, camera range) or msmt17 (list files); without data_root, the "
                                      "layout the synthetic set is written in and read back through")
        data_name: str | None = Field(
            None, description="the data set's name on the board; null = data_root's folder name, "
                              "'synthetic-<layout>' for the synthetic set, 'train→eval' for a cross-data-set pair")
        eval_data: dict[str, Any] | None = Field(
            None, description="cross-data-set protocol: query and gallery come from the data set these data params "
                              "describe (e.g. {data_root: /data/DukeMTMC-reID, layout: dukemtmcreid} or "
                              "{syn_seed: 1, layout: dukemtmcreid}); the model trains on the task's own data. "
                              "null = the training data set's query and gallery")
        height: int = Field(64, ge=16, description="image height the data is resized to")
        width: int = Field(32, ge=8, description="image width the data is resized to")
        syn_train_ids: int = Field(100, ge=4, description="synthetic: training identities")
        syn_test_ids: int = Field(80, ge=2, description="synthetic: test identities (query + gallery)")
        syn_cameras: int = Field(4, ge=2, le=15, description="synthetic: cameras (at most 6 in the market1501 "
                                                             "layout, 8 in dukemtmcreid, 15 in msmt17)")
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

        @model_validator(mode="after")
        def _data_params(self) -> "ReidAdversarialTask.Params":
            if not self.data_root and self.syn_cameras > CAMERAS[self.layout]:
                raise ValueError(f"syn_cameras {self.syn_cameras} does not fit the {self.layout} layout's "
                                 f"{CAMERAS[self.layout]} cameras; lower it or choose another layout")
            if self.eval_data is not None:
                unknown = sorted(set(self.eval_data) - set(DATA_PARAMS))
                if unknown:
                    raise ValueError(f"eval_data: {', '.join(unknown)} not among the data params it may set "
                                     f"({', '.join(DATA_PARAMS)})")
                if data_spec(self.evaluation()) == data_spec(self):
                    raise ValueError("eval_data describes the training data set itself (with a data_root the "
                                     "syn_* params are unused): give it another data_root, or data_root: null "
                                     "and another syn_seed or layout")
            return self

        def evaluation(self) -> "ReidAdversarialTask.Params":
            """The params of the data set the queries and gallery come from."""
            if self.eval_data is None:
                return self
            try:
                return type(self)(**{**self.model_dump(), **self.eval_data, "eval_data": None, "data_name": None})
            except ValidationError as exc:
                raise ValueError("eval_data: " + "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: "
                                                           f"{e['msg']}" for e in exc.errors())) from None

    added_params: ClassVar = ("data_name", "eval_data")

    presets: ClassVar = {
        "smoke": {"syn_train_ids": 12, "syn_test_ids": 8, "syn_mean_images": 6, "syn_cameras": 3,
                  "epochs": 1, "batch_ids": 4, "height": 32, "width": 16, "arch": "osnet_x0_25"},
        "paper": {"height": 256, "width": 128, "arch": "resnet50", "epochs": 60, "lr": 3.5e-4,
                  "batch_ids": 16, "syn_train_ids": 751, "syn_test_ids": 750},
    }

    def dataset_name(self) -> str:
        p = self.params
        if p.data_name:
            return p.data_name
        if p.eval_data is None:
            return world_name(p)
        train, test = world_name(p), world_name(p.evaluation())
        if test == train:  # two synthetic worlds of one layout
            test += f"-seed{p.evaluation().syn_seed}"
        return f"{train}→{test}"

    def model_name(self) -> str:
        return self.params.arch

    def check_data(self) -> None:
        """The layout of ``data_root`` (and of ``eval_data``'s), by name: no image is decoded."""
        from benchbench.reid.data import check_layout, find_layout_root

        sides = [self.params, *([self.params.evaluation()] if self.params.eval_data else [])]
        for p in sides:
            if p.data_root:
                check_layout(find_layout_root(p.data_root, p.layout), p.layout)

    def run(self, cell, ctx) -> dict[str, dict[str, float]]:
        from benchbench.reid.pipeline import run_cell

        return run_cell(self, cell, ctx)


def data_spec(p: ReidAdversarialTask.Params) -> tuple:
    """What decides which images a data set is: a folder and its layout, or the generator's params."""
    if p.data_root:
        return ("folder", str(Path(p.data_root).expanduser().resolve()), p.layout)
    return ("synthetic", p.syn_train_ids, p.syn_test_ids, p.syn_cameras, p.syn_mean_images, p.syn_seed,
            p.layout, p.height, p.width)


def world_name(p: ReidAdversarialTask.Params) -> str:
    """The data set's board name: its folder's, or ``synthetic-<layout>``."""
    return Path(p.data_root).name if p.data_root else f"synthetic-{SHORT[p.layout]}"


@benchbench.hookimpl
def benchbench_tasks():
    return [ReidAdversarialTask]
