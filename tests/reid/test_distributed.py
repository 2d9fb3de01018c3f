"""One ReID training on two processes (gloo, CPU): the ranks end with one model (weights
and BatchNorm buffers), each step follows the mean of the gradients of the two identity
shares, adversarial and meta-learning defenses keep the ranks in step (the smoke cells of
those whose stages train too), a checkpoint written by rank 0 resumes on both, and a
batch the ranks cannot split by identity is refused.

Why the step is checked against the two shares computed apart, not against one process
on the whole batch: batch-hard mining and BatchNorm's statistics are per rank by design
(each rank's P/W identities), so a W-process step is not the one-process step on the
global batch; the mean of the shares' gradients is what it must be (to rounding)."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.multiprocessing as mp

from benchbench import distributed
from benchbench.checkpoint import Checkpointer
from benchbench.reid.api import ReidDefense
from benchbench.reid.data import ReidData, load_reid_data
from benchbench.reid.trainer import TrainConfig, train
from benchbench_dddefense import DDDefense
from benchbench_metric_at import MetricAT
from benchbench_reid_baseline import StandardTraining
from tests.processes import on_processes

CONFIG = TrainConfig(arch="osnet_x0_25", epochs=2, ids_per_batch=4, images_per_id=2)
SEED = 3


class Stop(Exception):
    """Stands for every rank being stopped after a checkpoint."""


class Recording(StandardTraining):
    """``none`` that records its first step (the identities it trained on and the gradients
    the optimiser stepped along) and this rank's loss terms of every step. With ``share``
    (one process standing in for that rank of two) it keeps that half of each batch's
    identities; with ``stop_at`` it stops the training before that step."""

    def __init__(self, share: int | None = None, stop_at: int | None = None):
        super().__init__()
        self.share, self.stop_at = share, stop_at
        self.pids: torch.Tensor | None = None  # of the step running
        self.first: dict | None = None
        self.terms: list[dict[str, float]] = []

    def transform_batch(self, batch, run):
        if self.share is not None:
            ids = list(dict.fromkeys(batch.pids.tolist()))
            half = len(ids) // 2
            batch = batch.subset(torch.isin(batch.pids, torch.tensor(ids[self.share * half:(self.share + 1) * half])))
        self.pids = batch.pids
        return batch

    def train_step(self, batch, run):
        if run.step == self.stop_at:
            raise Stop
        terms = super().train_step(batch, run)
        if self.first is None:
            self.first = {"pids": self.pids, "grads": {n: p.grad.clone() for n, p in run.model.named_parameters()}}
        self.terms.append(terms)
        return terms


@pytest.fixture(scope="module")
def tiny(tiny_root) -> ReidData:
    return load_reid_data(tiny_root, (32, 16))


def _train(data: ReidData, make: Callable[[], ReidDefense], config: TrainConfig = CONFIG,
           log: Path | None = None, checkpoints: Path | None = None) -> dict:
    """Train ``make()``; the weights and buffers, and what a ``Recording`` recorded."""
    defense = make()
    model = train(defense, data.train, data.num_train_ids, config, seed=SEED, show_progress=False,
                  log_path=None if log is None else log / f"log{distributed.rank()}.json",
                  checkpoints=None if checkpoints is None else Checkpointer(checkpoints, 3))
    return {"state": model.state_dict(), "first": getattr(defense, "first", None),
            "terms": getattr(defense, "terms", None)}


def _assert_one_model(ranks: list[dict]) -> None:
    """Every rank holds the same weights and buffers (BatchNorm's running statistics)."""
    first, *others = ranks
    for other in others:
        assert other["state"].keys() == first["state"].keys()
        for k, v in first["state"].items():
            assert torch.equal(other["state"][k], v), k


def _assert_finite_log(path: Path) -> list[dict]:
    epochs = json.loads(path.read_text())["epochs"]
    assert epochs and all(math.isfinite(v) for e in epochs for k, v in e.items() if k not in ("epoch", "steps"))
    return epochs


def test_none_on_two_processes_steps_along_the_mean_of_the_shares_gradients(tiny, tmp_path):
    ranks = on_processes(tmp_path, _train, tiny, Recording, CONFIG, tmp_path)
    _assert_one_model(ranks)
    # each rank's first batch: half of the batch's identities, each with all its images
    shares = [r["first"]["pids"] for r in ranks]
    assert not set(shares[0].tolist()) & set(shares[1].tolist())
    for pids in shares:
        ids, counts = pids.unique(return_counts=True)
        assert len(ids) == CONFIG.ids_per_batch // 2 and (counts == CONFIG.images_per_id).all()
    # the step both ranks took is the mean of the shares' gradients, each computed by one process alone
    alone = [_train(tiny, partial(Recording, share), replace(CONFIG, epochs=1))["first"] for share in (0, 1)]
    assert [torch.equal(a["pids"], pids) for a, pids in zip(alone, shares)] == [True, True]
    for name, grad in ranks[0]["first"]["grads"].items():
        assert torch.equal(ranks[1]["first"]["grads"][name], grad), name
        mean = (alone[0]["grads"][name] + alone[1]["grads"][name]) / 2
        assert torch.allclose(grad, mean, rtol=1e-5, atol=1e-7), name
    # rank 0 alone writes the log; its losses are the ranks' mean per step, averaged over the epoch
    assert not (tmp_path / "log1.json").exists()
    epochs, done = _assert_finite_log(tmp_path / "log0.json"), 0
    for epoch in epochs:
        steps = range(done, done + epoch["steps"])
        for term in ("ce", "triplet"):
            mean = sum(r["terms"][s][term] for r in ranks for s in steps) / (2 * len(steps))
            assert epoch[term] == pytest.approx(mean, abs=1e-5)
        done += epoch["steps"]
    assert done == len(ranks[0]["terms"]) == len(ranks[1]["terms"])


def _stopped_and_resumed(data: ReidData, folder: Path) -> dict:
    """A training stopped after rank 0's checkpoint at step 3, then resumed by every rank
    from that checkpoint, and the same training uninterrupted."""
    with pytest.raises(Stop):
        _train(data, partial(Recording, stop_at=4), checkpoints=folder / "checkpoints")
    return {"resumed": _train(data, Recording, checkpoints=folder / "checkpoints"),
            "uninterrupted": _train(data, Recording)}


def test_a_checkpoint_of_rank_0_resumes_on_every_rank(tiny, tmp_path):
    ranks = on_processes(tmp_path, _stopped_and_resumed, tiny, tmp_path)
    for r in ranks:  # every rank took the steps after the checkpoint only
        assert len(r["resumed"]["terms"]) == len(r["uninterrupted"]["terms"]) - 3
    _assert_one_model([r["resumed"] for r in ranks])
    _assert_one_model([ranks[0]["resumed"], ranks[0]["uninterrupted"]])


@pytest.mark.parametrize("make, ids_per_batch", [
    (partial(MetricAT, preset="smoke"), 4),
    # without balancing, whose stages (a diffusion model, the plain model) come from the stage cache;
    # self-meta splits each rank's identities in two groups of >= 2, so 4 per rank
    (partial(DDDefense, {"balance": False}, preset="smoke"), 8)], ids=["metric-at", "dddefense"])
def test_adversarial_and_meta_defenses_keep_the_ranks_in_step(tiny, tmp_path, make, ids_per_batch):
    config = replace(CONFIG, epochs=1, ids_per_batch=ids_per_batch)
    ranks = on_processes(tmp_path, _train, tiny, make, config, tmp_path)
    _assert_one_model(ranks)
    _assert_finite_log(tmp_path / "log0.json")


def test_a_batch_whose_identities_the_processes_cannot_split_is_refused(tiny, tmp_path):
    with pytest.raises(mp.ProcessRaisedException, match=r"ids_per_batch 5 does not split over 2 processes; "
                                                        r"set ids_per_batch to a multiple of 2 \(e\.g\. 6\)"):
        on_processes(tmp_path, _train, tiny, Recording, replace(CONFIG, ids_per_batch=5))


def _smoke_cell(defense: str, task: dict, cache: Path) -> dict:
    """One smoke cell of ``defense`` (clean queries) as the grid runs it, through the stage cache."""
    from benchbench.registry import load_registry
    from benchbench.runner import Environment, run_cell

    cell = {"track": "reid", "task": {"name": "reid-adversarial", "params": task},
            "attack": {"name": "none", "params": {}}, "defense": {"name": defense, "params": {}},
            "evaluators": [{"name": "reid-rank", "params": {}}], "seed": 0, "preset": "smoke",
            "processes": 2}  # as a grid launched on 2 processes plans it
    result = run_cell(cell, Environment(cache_root=str(cache), progress=False), load_registry())
    return {k: result.get(k) for k in ("status", "traceback", "metrics")}


@pytest.mark.slow  # whole cells: measured 18-94 s each, depending on the machine's load
@pytest.mark.parametrize("defense, task, stages", [
    # self-meta splits each rank's identities in two groups of >= 2: batches of 8 identities, 4 per rank
    ("dddefense", {"batch_ids": 8}, {"dddefense-generator", "dddefense-balanced", "dddefense-gate"}),
    ("mid", {}, {"mid-decoder"})])
def test_smoke_cells_whose_stages_train_run_on_two_processes(tmp_path, defense, task, stages):
    """dddefense's balancing (a diffusion model, generated images, the gate's plain model)
    and MID's teacher and decoder are stages built on both processes together (the plain
    model is itself a training on both); then the defense trains, and both ranks evaluate
    one model."""
    ranks = on_processes(tmp_path, _smoke_cell, defense, task, tmp_path / "cache", timeout=600)
    assert [r["status"] for r in ranks] == ["ok", "ok"], ranks[0]["traceback"] or ranks[1]["traceback"]
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    built = {p.parent.parent.name for p in (tmp_path / "cache").glob("*/*/stage.json")}
    assert stages < built and len(list((tmp_path / "cache" / "reid-model").glob("*/stage.json"))) == 2  # and none
