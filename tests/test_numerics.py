"""Issue #14: every published number is a function of the config alone.

A diverged model fails its cell instead of topping the board; file listings are read in
name order whatever the filesystem returns; the torch thread count and the global RNGs
a cell sees are fixed by the cell, not by the executor or what ran before.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from benchbench.cells import CellSpec, ComponentRef
from benchbench.clip import data as clip_data
from benchbench.config import GridConfig, expand
from benchbench.errors import DivergedError
from benchbench.reid.data import load_reid_data
from benchbench.clip.synthetic import SyntheticSpec as ClipSpec
from benchbench.clip.synthetic import write_world
from benchbench.reid.metrics import evaluate_rank
from benchbench.reid.synthetic import SyntheticSpec as ReidSpec
from benchbench.reid.synthetic import generate
from benchbench.runner import Environment, run_cell
from benchbench.stages import StageCache


def _spec(track: str, task: dict, attack: str, evaluators: tuple[str, ...], threads: int = 1) -> dict:
    task_name = {"clip": "clip-poisoning", "reid": "reid-adversarial"}[track]
    return CellSpec(track, ComponentRef(task_name, task), ComponentRef(attack), ComponentRef("none"),
                    tuple(ComponentRef(e) for e in evaluators), 0, "smoke", threads).to_dict()


# -- item 2: a diverged model fails its cell ----------------------------------------------
def test_nan_distances_are_refused_not_ranked_perfect():
    pids, cams = np.array([1, 2]), np.array([0, 0])
    with pytest.raises(DivergedError, match="not finite"):
        evaluate_rank(torch.full((2, 2), float("nan")), pids, pids, cams, np.array([1, 1]))


@pytest.mark.parametrize("track, attack, evaluators, stage", [
    ("reid", "none", ("reid-rank",), "reid-model"),
    ("clip", "none", ("zero-shot",), "clip-model"),
])
def test_diverged_training_fails_the_cell_and_caches_no_model(registry, tmp_path, track, attack, evaluators,
                                                              stage):
    result = run_cell(_spec(track, {"lr": 1e30}, attack, evaluators), Environment(str(tmp_path), progress=False),
                      registry)
    assert result["status"] == "failed" and result["error"].startswith("DivergedError"), result["error"]
    assert not list((tmp_path / stage).glob("*/stage.json"))  # nothing for the attack columns to reuse


# -- item 4: file listings in name order ----------------------------------------------------
@pytest.fixture(scope="module")
def reid_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("market")
    generate(root, ReidSpec(train_ids=6, test_ids=4, cameras=3, height=32, width=16, mean_images_per_id=4,
                            distractors=2, junk=2))
    return root


@pytest.fixture(scope="module")
def clip_world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world"), ClipSpec(n_pairs=24, n_eval_train=16, n_eval_test=16,
                                                                  image_size=16, seed=3))


@pytest.fixture
def reversed_listing(monkeypatch):
    """Make every directory listing come back in reverse (another filesystem's order)."""
    real = os.scandir

    class Reversed:
        def __init__(self, path="."):
            self._it = real(path)
            self._entries = list(self._it)[::-1]

        def __iter__(self):
            return iter(self._entries)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._it.close()

        def close(self):
            self._it.close()

    def apply():
        monkeypatch.setattr(os, "scandir", Reversed)
        monkeypatch.setattr(os, "listdir", lambda path=".": sorted(real_listdir(path), reverse=True))

    real_listdir = os.listdir
    return apply


def test_reid_data_does_not_depend_on_the_listing_order(reid_root, reversed_listing):
    before = load_reid_data(reid_root, (32, 16))
    reversed_listing()
    after = load_reid_data(reid_root, (32, 16))
    for split in ("train", "query", "gallery"):
        a, b = getattr(before, split), getattr(after, split)
        assert torch.equal(a.images, b.images) and torch.equal(a.pids, b.pids) and torch.equal(a.camids, b.camids)


def test_clip_data_does_not_depend_on_the_listing_order(clip_world, reversed_listing, tmp_path):
    pairs, evaluation = clip_world
    before = clip_data.load_pairs(pairs, 16, cache_dir=tmp_path / "a"), clip_data.load_labelled(
        evaluation, 16, cache_dir=tmp_path / "a")
    reversed_listing()
    after = clip_data.load_pairs(pairs, 16, cache_dir=tmp_path / "b"), clip_data.load_labelled(
        evaluation, 16, cache_dir=tmp_path / "b")
    assert before[0][clip_data.CAPTION] == after[0][clip_data.CAPTION]
    for split in before[1]:
        assert before[1][split][clip_data.LABEL] == after[1][split][clip_data.LABEL]
        assert [np.asarray(i).tobytes() for i in before[1][split][clip_data.IMAGE]] == \
               [np.asarray(i).tobytes() for i in after[1][split][clip_data.IMAGE]]


# -- item 5: threads and RNGs fixed by the cell ---------------------------------------------
def test_threads_are_in_the_cell_key(registry):
    def key(threads: int) -> str:
        config = GridConfig(track="reid", attacks=["none"], defenses=["none"], evaluators=["reid-rank"],
                            threads=threads)
        (cell,) = expand(config, registry, preset="smoke")
        assert cell.threads == threads
        return cell.resolve(registry).key()

    assert key(1) != key(2)


def test_stage_keys_hold_the_thread_count(tmp_path):
    assert StageCache(tmp_path, threads=1).key("s", {"a": 1}) != StageCache(tmp_path, threads=2).key("s", {"a": 1})


def test_building_a_stage_leaves_the_global_rngs_as_a_hit_does(tmp_path):
    cache = StageCache(tmp_path)

    def after_get(seed: int) -> tuple[float, float]:
        torch.manual_seed(seed)
        np.random.seed(seed)
        cache.get_or_build("s", {}, lambda out: (torch.rand(5), np.random.rand(5)))
        return float(torch.rand(1)), float(np.random.rand())

    built = after_get(0)
    assert cache.builds("s") == 1
    assert after_get(0) == built  # the second call was a hit


def test_a_cell_runs_with_its_threads_and_seeded_rngs_whatever_ran_before(registry, tmp_path, monkeypatch):
    seen = []

    def fake_run(task, cell, ctx):
        seen.append((torch.get_num_threads(), float(torch.rand(1)), float(np.random.rand())))
        return {"reid-rank": {"mAP": 0.5, "rank1": 0.5, "rank5": 0.5, "rank10": 0.5}}

    monkeypatch.setattr("benchbench.reid.pipeline.run_cell", fake_run)
    env = Environment(str(tmp_path), progress=False)
    for threads_before, rng_before in ((3, 1), (1, 2)):
        torch.set_num_threads(threads_before)
        torch.manual_seed(rng_before)
        np.random.seed(rng_before)
        assert run_cell(_spec("reid", {}, "none", ("reid-rank",), threads=2), env, registry)["status"] == "ok"
        assert torch.get_num_threads() == threads_before  # restored for the driver
    assert seen[0] == seen[1] and seen[0][0] == 2


def test_cells_of_another_thread_count_are_another_protocol_on_the_board():
    from benchbench.leaderboard import _protocol

    def protocol(threads: int) -> str:
        return _protocol(json.dumps({"task": {"name": "t", "version": "1", "params": {}, "threads": threads}}))

    assert protocol(1) != protocol(2)  # never averaged as if they were more seeds
