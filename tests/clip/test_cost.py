"""Training cost as a metric: what the trainer logs, what ``benchbench.cost`` reads back,
and the reference points CLIP evaluators report next to their metrics."""
from __future__ import annotations

import json

import pytest
import torch

from benchbench.clip.data import load_pairs
from benchbench.clip.evaluation import chance
from benchbench.clip.model import ClipModel, ModelSpec
from benchbench.clip.trainer import PairSet, TrainConfig
from benchbench.cost import training_cost
from benchbench_clip_baseline import StandardClip
from benchbench_rematch_eval import nearest_caption_false_rate, random_floor

CONFIG = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=0, progress=False)


class TimedMatching(StandardClip):
    """Stands in for a re-matching defense: its second epoch spends time "matching"."""

    def loss(self, batch, features, state):
        if state.epoch == 1:
            with state.timed("match"):
                pass
        return super().loss(batch, features, state)


@pytest.fixture(scope="module")
def pairs(world, tmp_path_factory):
    return load_pairs(world[0], 32, cache_dir=tmp_path_factory.mktemp("hf"))


def test_the_trainer_logs_steps_and_timed_work_and_cost_reads_them(pairs, tmp_path):
    model = ClipModel.create(ModelSpec(), seed=0)
    log = TimedMatching().train(model, CONFIG, PairSet.from_dataset(pairs, model))
    assert [r["steps"] for r in log] == [len(pairs) // 16] * 2
    assert "timed" not in log[0] and log[1]["timed"]["match"] >= 0
    (tmp_path / "train_log.json").write_text(json.dumps(log))
    (tmp_path / "stage.json").write_text(json.dumps({"build_seconds": 12.5}))
    cost = training_cost(tmp_path)
    assert cost == {"build_seconds": 12.5, "train_seconds": pytest.approx(sum(r["seconds"] for r in log)),
                    "steps": 2.0 * (len(pairs) // 16), "match_seconds": log[1]["timed"]["match"]}


def test_cost_reads_reid_logs_and_logs_from_before_steps_were_recorded(tmp_path):
    (tmp_path / "train_log.json").write_text(json.dumps(
        {"config": {}, "epochs": [{"epoch": 0, "seconds": 2.0, "steps": 5}, {"epoch": 1, "seconds": 3.0, "steps": 5}]}))
    assert training_cost(tmp_path) == {"train_seconds": 5.0, "steps": 10.0}  # no stage.json: no build_seconds
    (tmp_path / "train_log.json").write_text(json.dumps([{"seconds": 2.0}, {"seconds": 1.0}]))
    assert training_cost(tmp_path) == {"train_seconds": 3.0}  # an old log: no steps, not 0 steps


def test_chance_is_the_most_frequent_class_share():
    assert chance(torch.tensor([0, 1, 2, 3])) == 0.25
    assert chance(torch.tensor([0, 0, 0, 1])) == 0.75


def test_random_floor_is_the_false_rate_of_a_random_caption():
    classes = ["cat", "dog"]
    captions = ["a cat", "a cat", "a dog", "a dog", "a photo"]  # the last names no class
    matches = {"epoch": torch.tensor([0, 1, 1, 1, 1, 1]), "image_row": torch.tensor([0, 0, 1, 2, 3, 4])}
    poison = torch.tensor([False, False, False, True, False])
    # clean rows naming a class: 0, 1 (cat: 2 of 5 captions) and 2 (dog: 2 of 5); a random caption
    # names other classes with probability 3/5 for each
    assert random_floor(matches, poison, captions, classes) == pytest.approx(3 / 5)
    assert random_floor(matches, torch.ones(5, dtype=torch.bool), captions, classes) is None


def test_plain_false_rate_is_the_nearest_caption_rule():
    """``false_rematch_rate_plain``: the share of scored rows whose nearest caption (all
    captions, cosine) names other classes than their own caption."""
    meaning = [frozenset({"cat"}), frozenset({"cat"}), frozenset({"dog"}), frozenset({"dog"})]
    texts = torch.eye(4)
    # row 0 is nearest its own caption; row 1 nearest caption 2 (a dog: wrong); row 2 nearest
    # caption 3 (another dog: right)
    images = torch.tensor([[1.0, 0, 0, 0], [0, 0.2, 0.9, 0], [0, 0, 0.1, 0.8], [0, 0, 0, 1.0]])
    assert nearest_caption_false_rate(images, texts, [0, 1, 2], meaning) == pytest.approx(1 / 3)
    assert nearest_caption_false_rate(images, texts, [0, 2, 3], meaning) == 0.0
