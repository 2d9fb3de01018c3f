"""Augmentations and in-modal losses shared by the defenses."""
from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from benchbench.clip.augment import augment_images, eda, image_augmentation
from benchbench.clip.inmodal import inmodal_loss, nn_inmodal_loss, one_way_infonce
from benchbench.clip.rematch import FeatureQueue


@pytest.mark.parametrize("kind", ["simclr", "autoaugment"])
def test_image_views_keep_shape_and_dtype_and_differ(kind):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    views = augment_images(images, image_augmentation(kind, 32), group=2)
    assert views.shape == images.shape and views.dtype == torch.uint8
    assert not torch.equal(views, images)


def test_image_views_are_seeded():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    t = image_augmentation("simclr", 32)
    torch.manual_seed(1)
    a = augment_images(images, t)
    torch.manual_seed(1)
    assert torch.equal(a, augment_images(images, t))


def test_eda_without_synonyms_swaps_or_deletes_words():
    caption = "A red circle to the left of a blue square!"
    words = sorted("a red circle to the left of a blue square".split())
    seen = set()
    rng = random.Random(0)
    for _ in range(50):
        view = eda(caption, rng)
        seen.add(view)
        out = view.split()
        if len(out) == len(words):  # random swap: same multiset of words
            assert sorted(out) == words
        else:  # random deletion: a sub-multiset
            assert len(out) < len(words) and all(out.count(w) <= words.count(w) for w in out)
    assert len(seen) > 5


def test_eda_synonym_replacement_uses_the_table():
    rng = random.Random(0)
    views = {eda("a red circle", rng, alpha_ri=0, alpha_rs=0, p_rd=0, synonyms={"circle": ["disc"]})
             for _ in range(5)}
    assert views == {"a red disc"}


def test_eda_is_deterministic_given_the_rng():
    a = [eda("a small red circle on a dark background", random.Random(3)) for _ in range(3)]
    assert len(set(a)) == 1


def test_cleanclip_inmodal_loss_on_hand_made_features():
    # two orthogonal items; each view equals its original: logits diag s, off-diagonal 0
    z = torch.eye(2)
    scale = torch.tensor(2.0)
    expected = math.log(1 + math.exp(-2.0))  # -log softmax of the diagonal
    assert inmodal_loss(z, z, z, z, scale).item() == pytest.approx(expected, rel=1e-5)
    # swapped views: the positive now has logit 0, the negative 2
    swapped = z.flip(0)
    assert one_way_infonce(z, swapped, scale).item() == pytest.approx(math.log(1 + math.exp(2.0)), rel=1e-5)


def test_inmodal_loss_is_one_directional_per_modality():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    c, d = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    s = torch.tensor(3.0)
    want = (F.cross_entropy(s * a @ b.T, torch.arange(5)) + F.cross_entropy(s * c @ d.T, torch.arange(5))) / 2
    assert torch.allclose(inmodal_loss(a, b, c, d, s), want)


def test_nn_inmodal_loss_uses_the_bank_before_this_batch():
    image_bank, text_bank = FeatureQueue(8), FeatureQueue(8)
    e = torch.eye(4)
    first = nn_inmodal_loss(e[:2], e[:2], e[:2], e[:2], torch.tensor(5.0), image_bank, text_bank)
    assert len(image_bank) == 2 and len(text_bank) == 2
    # empty bank -> the first views themselves: same as CleanCLIP's loss on identical views
    assert torch.allclose(first, inmodal_loss(e[:2], e[:2], e[:2], e[:2], torch.tensor(5.0)))
    # now the bank holds e0, e1: a query near e1 gets e1 as its neighbour
    q = F.normalize(torch.tensor([[0.2, 1.0, 0.0, 0.0], [1.0, 0.1, 0.0, 0.0]]), dim=1)
    view = e[[1, 0]]
    loss = nn_inmodal_loss(q, view, q, view, torch.tensor(5.0), image_bank, text_bank)
    assert torch.allclose(loss, inmodal_loss(view, view, view, view, torch.tensor(5.0)))
