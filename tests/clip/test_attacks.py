"""Triggers and poisoning: what each attack writes into the training set and its probe."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchbench.clip import data
from benchbench.clip.api import NoPoison
from benchbench.clip.poisoning import captions_naming, resolve_class, rows_naming
from benchbench.errors import ConfigError, DataError
from benchbench_clip_attacks import SIG, BadNets, Blended, LabelConsistent, TargetedPoison, WaNet


@pytest.fixture(scope="module")
def tiny_data(world, tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf")
    pairs = data.load_pairs(world[0], 32, cache_dir=cache)
    test = data.load_labelled(world[1], 32, cache_dir=cache)["test"]
    return pairs, test


def _grey(n=6, size=32, value=7):
    return torch.full((n, 3, size, size), value, dtype=torch.uint8)


def test_badnets_corner_patch_is_the_same_fixed_pattern_everywhere():
    attack = BadNets({"position": "corner", "patch": 0.125})
    out = attack.apply_trigger(_grey(), torch.Generator().manual_seed(0))
    side = 4  # 0.125 * 32
    patch = out[:, :, -side:, -side:]
    assert torch.equal(patch, attack.patch_pattern(side).expand_as(patch))
    rest = out.clone()
    rest[:, :, -side:, -side:] = 7
    assert rest.unique().tolist() == [7]


def test_badnets_random_positions_stay_inside_and_vary():
    attack = BadNets({"position": "random", "patch": 0.25, "pattern": "checkerboard"})
    images = _grey(n=20, value=128)
    out = attack.apply_trigger(images, torch.Generator().manual_seed(0))
    corners = set()
    for changed in (out != images).any(dim=1):
        ys, xs = torch.nonzero(changed, as_tuple=True)
        assert ys.max() - ys.min() < 8 and xs.max() - xs.min() < 8
        corners.add((ys.min().item(), xs.min().item()))
    assert len(corners) > 10
    again = attack.apply_trigger(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_blended_mixes_one_fixed_noise_image_with_alpha():
    attack = Blended({"alpha": 0.2})
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    out = attack.apply_trigger(images, torch.Generator())
    noise = ((out.float() - 0.8 * images.float()) / 0.2)
    assert torch.allclose(noise[0], noise[1], atol=5) and torch.allclose(noise[0], noise[2], atol=5)
    assert torch.equal(out, attack.apply_trigger(images, torch.Generator()))
    assert (out.float() - images.float()).abs().mean() > 5


def test_badnets_paper_preset_is_cleanclips_fresh_gaussian_patch():
    """CleanCLIP's patch: 16 px on 224, the image's channel means + N(0, 1) noise, redrawn
    for every image, at a random position; deterministic for the generator's seed."""
    attack = BadNets(preset="paper")
    assert attack.params.captions == "imagenet-templates" and attack.params.position == "random"
    images = _grey(n=8, size=224, value=128)
    out = attack.apply_trigger(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, attack.apply_trigger(images, torch.Generator().manual_seed(0)))
    patches = []
    for image, changed in zip(out, (out != images).any(dim=1)):
        ys, xs = changed.any(1).nonzero()[:, 0], changed.any(0).nonzero()[:, 0]
        assert len(ys) == len(xs) == 16 and changed.sum() > 250  # one 16 px square
        patches.append(image[:, ys.min():ys.max() + 1, xs.min():xs.max() + 1])
    assert not any(torch.equal(patches[0], p) for p in patches[1:])  # fresh noise, same clean image
    values = torch.stack(patches).float() / 255
    assert abs(values.mean() - 0.5) < 0.05 and (values == 0).float().mean() > 0.25  # N(0.5, 1), clamped


def test_blended_paper_preset_is_cleanclips_fresh_uniform_blend():
    attack = Blended(preset="paper")
    assert attack.params.alpha == 0.2 and attack.params.captions == "imagenet-templates"
    images = torch.full((4, 3, 32, 32), 100, dtype=torch.uint8)
    out = attack.apply_trigger(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, attack.apply_trigger(images, torch.Generator().manual_seed(0)))
    noise = (out.float() - 0.8 * images.float()) / 0.2
    assert not any(torch.allclose(noise[0], n, atol=5) for n in noise[1:])  # fresh per image
    assert noise.min() < 20 and noise.max() > 235 and abs(noise.mean() - 127.5) < 10  # uniform pixel noise
    assert (noise[:, :, :, 1:] - noise[:, :, :, :-1]).abs().mean() > 40  # one cell per pixel


@pytest.mark.parametrize("attack_cls", [BadNets, Blended])
def test_paper_preset_captions_draw_cleanclips_imagenet_templates(tiny_data, attack_cls):
    pairs, test = tiny_data
    out = attack_cls({"target": "star", "poison_rate": 0.2}, preset="paper").poison(pairs, test, seed=0)
    flags = np.array(out.train["is_poison"][:])
    captions = np.array(out.train["caption"][:])[flags]
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    allowed = {t("star") for t in OPENAI_IMAGENET_TEMPLATES}
    assert set(captions) <= allowed and len(set(captions)) > 3


def test_sig_adds_one_column_sinusoid_to_every_row_and_channel():
    attack = SIG({"delta": 40, "frequency": 6})
    out = attack.apply_trigger(_grey(n=2, value=128), torch.Generator())
    delta = out.float() - 128
    expected = torch.tensor([40 * np.sin(2 * np.pi * j * 6 / 32) for j in range(32)], dtype=torch.float32)
    assert torch.allclose(delta, expected.round().expand_as(delta), atol=1)
    assert delta.abs().max() > 38 and torch.equal(delta[:, :, 0], delta[:, :, 17])  # same signal on every row


def test_sig_paper_preset_is_cleanclips_blend():
    attack = SIG(preset="paper")
    assert (attack.params.delta, attack.params.blend, attack.params.captions) == (60, 0.2, "imagenet-templates")
    out = attack.apply_trigger(_grey(n=1, value=100), torch.Generator())
    expected = 0.8 * 100 + 0.2 * attack.signal(32)
    assert torch.allclose(out[0, 0, 5].float(), expected.round(), atol=1)


def test_wanet_moves_pixels_by_its_fixed_warp_field():
    """On a horizontal ramp, bilinear warping is exact: each output pixel is the ramp at
    the x coordinate the warp's grid names."""
    attack = WaNet({"s": 4.0, "k": 4})
    ramp = (torch.arange(32) * 8).to(torch.uint8).expand(2, 3, 32, 32)
    out = attack.apply_trigger(ramp, torch.Generator())
    source_x = (attack.grid(32)[0, ..., 0] + 1) / 2 * 31
    assert torch.allclose(out[0, 0].float(), (8 * source_x).round(), atol=1)
    assert torch.equal(out[0], out[1])  # one warp for every image
    shift = (source_x - torch.arange(32).float()).abs()
    assert 0.5 < shift.mean() < 4  # s 4: about a 2 px warp, visible but no scramble
    weak = WaNet({"s": 0.5}).grid(32)[0, ..., 0]
    assert ((weak + 1) / 2 * 31 - torch.arange(32).float()).abs().mean() < shift.mean() / 4


def test_wanet_paper_preset_is_cleanclips_dense_warp():
    attack = WaNet(preset="paper")
    assert (attack.params.k, attack.params.s, attack.params.captions) == (224, 1.0, "imagenet-templates")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(attack.apply_trigger(images, torch.Generator()), attack.apply_trigger(images, torch.Generator()))


@pytest.mark.parametrize("attack_cls", [BadNets, Blended, SIG, WaNet])
def test_backdoor_poisons_rate_of_pairs_with_target_captions(tiny_data, attack_cls):
    pairs, test = tiny_data
    attack = attack_cls({"target": "star", "poison_rate": 0.1, "captions": "template"})
    out = attack.poison(pairs, test, seed=0)
    flags = np.array(out.train["is_poison"][:])
    assert len(out.train) == len(pairs) and flags.sum() == round(0.1 * len(pairs))
    captions = np.array(out.train["caption"][:])
    assert set(captions[flags]) == {"a photo of a star."}
    assert list(captions[~flags]) == list(np.array(pairs["caption"][:])[~flags])
    before, after = data.to_uint8(pairs), data.to_uint8(out.train)
    assert torch.equal(before[~flags], after[~flags]) and not torch.equal(before[flags], after[flags])
    star = data.class_names(test).index("star")
    labels = np.array(test["label"][:])
    assert out.probe.triggered and set(out.probe.targets) == {star}
    assert list(out.probe.indices) == list(np.flatnonzero(labels != star))


def test_backdoor_captions_from_training_data_name_only_the_target(tiny_data):
    pairs, test = tiny_data
    out = BadNets({"target": "ring", "poison_rate": 0.1}).poison(pairs, test, seed=1)
    for caption in np.array(out.train["caption"][:])[np.array(out.train["is_poison"][:])]:
        assert "ring" in caption and not any(s in caption for s in ("circle", "square", "star", "cross"))


def test_label_consistent_triggers_only_pairs_that_already_name_the_target(tiny_data):
    pairs, test = tiny_data
    out = LabelConsistent({"target": "star", "poison_rate": 0.05}, preset="default").poison(pairs, test, seed=0)
    flags = np.array(out.train["is_poison"][:])
    captions, classes = list(pairs["caption"][:]), data.class_names(test)
    assert flags.sum() == round(0.05 * len(pairs))
    assert set(np.flatnonzero(flags)) <= set(rows_naming(captions, classes, classes.index("star")))
    assert list(out.train["caption"][:]) == captions  # every caption kept
    before, after = data.to_uint8(pairs), data.to_uint8(out.train)
    corner = (after[flags] != before[flags])[:, :, -8:, -8:]
    assert corner.any() and torch.equal(before[flags][:, :, :-8], after[flags][:, :, :-8])  # the corner patch only
    assert out.probe.triggered


def test_label_consistent_needs_enough_captions_naming_the_target(tiny_data):
    pairs, test = tiny_data
    with pytest.raises(DataError, match="needs 48 training captions naming 'star'.*lower poison_rate"):
        LabelConsistent({"target": "star", "poison_rate": 1.0}).poison(pairs, test, seed=0)


def test_captions_naming_matches_whole_words_only():
    caps = ["a red ring", "a ring and a star", "a bring", "two rings", "a star"]
    assert captions_naming(caps, ["ring", "star"], 0) == ["a red ring", "two rings"]


def test_unknown_target_class_lists_the_classes():
    with pytest.raises(ConfigError, match="unknown target class 'banana'.*circle"):
        resolve_class("banana", ("circle", "square"), np.random.default_rng(0))


def test_targeted_poison_adds_test_images_with_adversarial_captions(tiny_data):
    pairs, test = tiny_data
    attack = TargetedPoison({"n_targets": 3, "captions_per_target": 4})
    out = attack.poison(pairs, test, seed=0)
    flags = np.array(out.train["is_poison"][:])
    assert len(out.train) == len(pairs) + 12 and flags[len(pairs):].all() and not flags[:len(pairs)].any()
    labels, classes = np.array(test["label"][:]), data.class_names(test)
    added = data.to_uint8(out.train.select(range(len(pairs), len(pairs) + 12)))
    test_images = data.to_uint8(test)
    captions = out.train["caption"][len(pairs):]
    for k, (row, adversarial) in enumerate(zip(out.probe.indices, out.probe.targets)):
        assert adversarial != labels[row] and not out.probe.triggered
        for j in range(4):
            assert torch.equal(added[4 * k + j], test_images[row])
            assert classes[adversarial] in captions[4 * k + j]


def test_no_poison_flags_nothing(tiny_data):
    pairs, test = tiny_data
    out = NoPoison().poison(pairs, test, seed=0)
    assert out.probe is None and not any(out.train["is_poison"][:]) and len(out.train) == len(pairs)
