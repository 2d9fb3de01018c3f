"""Adaptive targeted poisoning: the world's caption vocabulary and what each attack writes."""
from __future__ import annotations

import re

import numpy as np
import pytest

from benchbench.clip import data
from benchbench.clip.poisoning import captions_naming
from benchbench.clip.synthetic import (BACKGROUND_WORDS, COLOUR_WORDS, WHERE_WORDS, SceneWords, SyntheticSpec, World,
                                       paraphrases, read_scene)
from benchbench.errors import ConfigError
from benchbench_clip_attacks import FineGrainedMimicry, ParaphraseFlood, TargetedPoison


@pytest.fixture(scope="module")
def tiny_data(world, tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf")
    return data.load_pairs(world[0], 32, cache_dir=cache), data.load_labelled(world[1], 32, cache_dir=cache)["test"]


def _names(caption: str, words: tuple[str, ...]) -> bool:
    return any(re.search(rf"\b{w}\b", caption) for w in words)


def _colours_named(caption: str) -> set[str]:
    return {c for c, words in COLOUR_WORDS.items() if _names(caption, words)}


def test_read_scene_reads_the_worlds_own_attributes_from_pixels():
    """Measured on 200 scenes: colour and background 1.0, size 0.975, place 0.92 (a
    crescent's or star's centroid is off its centre)."""
    world = World(SyntheticSpec(seed=11))
    truth, read = [], []
    for _ in range(120):
        things, background = world.scene(1)
        truth.append((things[0].colour, things[0].size, background, "center"))  # evaluation objects are centred
        words = read_scene(np.asarray(world.draw(things, background)))
        read.append((words.colour, words.size, words.background, words.where))
    agree = np.mean(np.array(truth) == np.array(read), axis=0)
    assert agree[0] >= 0.95 and agree[1] >= 0.9 and agree[2] >= 0.95 and agree[3] >= 0.85, agree


def test_paraphrases_are_distinct_wordings_of_one_scene():
    scene = SceneWords("red", "small", "left", "dark")
    texts = paraphrases("star", 20, seed=0, scene=scene)
    assert len(texts) == len(set(texts)) == 20
    assert captions_naming(texts, ("star", "circle", "ring"), 0) == texts
    assert all(_colours_named(t) == {"red"} for t in texts)
    assert paraphrases("star", 20, seed=0, scene=scene) == texts  # seeded


@pytest.mark.parametrize("attack_cls", [ParaphraseFlood, FineGrainedMimicry])
def test_adaptive_attacks_keep_targeted_poisons_targets_and_budget(tiny_data, attack_cls):
    pairs, test = tiny_data
    budget = {"n_targets": 3, "captions_per_target": 6}
    out = attack_cls(budget).poison(pairs, test, seed=2)
    reference = TargetedPoison(budget).poison(pairs, test, seed=2)
    assert (out.probe.indices, out.probe.targets) == (reference.probe.indices, reference.probe.targets)
    assert len(out.train) == len(reference.train) == len(pairs) + 18
    assert data.to_uint8(out.train).equal(data.to_uint8(reference.train))  # the same images, other captions


def _target_captions(out, n_pairs: int, per_target: int) -> list[list[str]]:
    captions = out.train["caption"][n_pairs:]
    return [captions[k * per_target:(k + 1) * per_target] for k in range(len(out.probe.indices))]


def test_paraphrase_flood_writes_distinct_paraphrases_of_one_adversarial_caption(tiny_data):
    pairs, test = tiny_data
    classes = data.class_names(test)
    out = ParaphraseFlood({"n_targets": 4, "captions_per_target": 10}).poison(pairs, test, seed=0)
    for captions, adversarial in zip(_target_captions(out, len(pairs), 10), out.probe.targets):
        assert len(set(captions)) == 10  # the paraphrase count: every poison pair its own wording
        assert captions_naming(captions, classes, adversarial) == captions  # the adversarial class alone
        assert len(set().union(*map(_colours_named, captions))) == 1  # one scene, many wordings
    fewer = ParaphraseFlood({"n_targets": 4, "captions_per_target": 10, "paraphrases": 3}).poison(pairs, test, seed=0)
    assert all(len(set(c)) == 3 for c in _target_captions(fewer, len(pairs), 10))


def test_mimicry_copies_the_targets_attribute_words_and_changes_only_the_object(tiny_data):
    pairs, test = tiny_data
    classes = data.class_names(test)
    out = FineGrainedMimicry({"n_targets": 4, "captions_per_target": 8}).poison(pairs, test, seed=0)
    images = data.to_uint8(test)
    for row, adversarial, captions in zip(out.probe.indices, out.probe.targets,
                                          _target_captions(out, len(pairs), 8)):
        scene = read_scene(images[row].permute(1, 2, 0).numpy())
        assert captions_naming(captions, classes, adversarial) == captions
        assert len(set(captions)) == 8
        for caption in captions:
            assert _colours_named(caption) == {scene.colour}, caption
            assert _names(caption, WHERE_WORDS[scene.where]) or _names(caption, BACKGROUND_WORDS[scene.background])


@pytest.mark.parametrize("attack_cls", [ParaphraseFlood, FineGrainedMimicry])
def test_adaptive_attacks_refuse_classes_outside_the_worlds_vocabulary(attack_cls):
    with pytest.raises(ConfigError, match="synthetic world's vocabulary.*'apple'.*targeted-poison"):
        attack_cls().target_captions([], None, ("apple", "circle"), 0, np.random.default_rng(0))
