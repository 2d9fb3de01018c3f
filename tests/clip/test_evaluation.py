"""Zero-shot, linear probe and ASR on hand-made models whose answers we know."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from benchbench.clip.api import ClipDataAttack, Probe
from benchbench.clip.data import Labelled
from benchbench.clip.evaluation import EvalInputs, linear_probe, topk_accuracy, zero_shot_classifier
from benchbench_clip_eval import AttackSuccess, ZeroShot

CLASSES = ("apple", "boat", "cat")


class PixelModel:
    """'Sees' the class written in pixel ``(0, y, x)`` of each image; reads prompts by class name."""

    def __init__(self, y: int = 0, x: int = 0):
        self.y, self.x = y, x

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.one_hot(images[:, 0, self.y, self.x].long() % len(CLASSES), len(CLASSES)).float()

    def encode_texts(self, prompts: list[str]) -> torch.Tensor:
        return torch.stack([F.one_hot(torch.tensor(next(i for i, c in enumerate(CLASSES) if c in p)),
                                      len(CLASSES)).float() for p in prompts])


class WriteTarget(ClipDataAttack):
    """A trigger that writes the target class into the pixel PixelModel(0, 0) reads."""

    name = "write-target"
    track = "clip"
    description = "test trigger"

    def apply_trigger(self, images, generator):
        out = images.clone()
        out[:, 0, 0, 0] = 1
        return out


def _test_set(labels):
    images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor(labels)  # what the poisoned model reads
    images[:, 0, 1, 1] = torch.tensor(labels)  # what a trigger-blind model reads
    return Labelled(images, torch.tensor(labels), CLASSES)


def _inputs(model, test, probe, clean=None):
    return EvalInputs(model=model, test=test, templates=("a photo of a {}.", "a {}."), attack=WriteTarget(),
                      probe=probe, seed=0, clean_model_fn=(lambda: clean) if clean else None)


def test_backdoor_asr_counts_only_predictions_of_the_target():
    test = _test_set([0, 1, 2, 0, 1, 2])
    probe = Probe(indices=(0, 2, 3, 5), targets=(1, 1, 1, 1), triggered=True)  # label-1 rows dropped
    out = AttackSuccess().evaluate(_inputs(PixelModel(0, 0), test, probe, clean=PixelModel(1, 1)))
    assert out == {"asr": 1.0, "asr_clean": 0.0}


def test_asr_is_not_just_a_changed_prediction():
    """CleanCLIP's bug ignored the target index; a model that always answers class 2
    after the trigger must score 0 for target 1."""

    class AlwaysTwo(WriteTarget):
        def apply_trigger(self, images, generator):
            out = images.clone()
            out[:, 0, 0, 0] = 2
            return out

    test = _test_set([0, 0, 2, 2])
    inputs = _inputs(PixelModel(), test, Probe((0, 1), (1, 1), True))
    inputs.attack = AlwaysTwo()
    assert AttackSuccess().evaluate(inputs) == {"asr": 0.0}


def test_targeted_asr_uses_each_rows_own_target_without_trigger():
    test = _test_set([1, 2, 0, 0])
    probe = Probe(indices=(0, 1, 2, 3), targets=(1, 0, 0, 2), triggered=False)
    assert AttackSuccess().evaluate(_inputs(PixelModel(), test, probe)) == {"asr": 0.5}


def test_no_probe_no_asr():
    assert AttackSuccess().evaluate(_inputs(PixelModel(), _test_set([0, 1]), None)) == {}


def test_zero_shot_reports_top5_only_with_more_than_five_classes():
    test = _test_set([0, 1, 2, 2])
    test.images[3, 0, 0, 0] = 0  # one mistake
    assert ZeroShot().evaluate(_inputs(PixelModel(), test, None)) == {"top1": 0.75, "chance": 0.5}


def test_zero_shot_classifier_averages_normalised_prompts():
    class Fixed:
        def encode_texts(self, prompts):
            table = {"x-a": [1.0, 0.0], "x-b": [0.0, 1.0], "y-a": [1.0, 0.0], "y-b": [1.0, 0.0]}
            return F.normalize(torch.tensor([table[p] for p in prompts]), dim=-1)

    w = zero_shot_classifier(Fixed(), ["a", "b"], ["x-{}", "y-{}"])
    assert torch.allclose(w[0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(w[1], F.normalize(torch.tensor([1.0, 1.0]), dim=0))


def test_topk_accuracy():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    assert topk_accuracy(logits, torch.tensor([1, 2]), 1) == 0.5
    assert topk_accuracy(logits, torch.tensor([1, 1]), 2) == 1.0


def test_linear_probe_separates_blobs_and_picks_a_swept_c():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 8))
    y_train, y_test = rng.integers(0, 4, 200), rng.integers(0, 4, 100)
    x_train = 0.01 * (centres[y_train] + rng.normal(0, 1, (200, 8)))  # tiny features: strong L2 underfits
    x_test = 0.01 * (centres[y_test] + rng.normal(0, 1, (100, 8)))
    acc, c = linear_probe(x_train, y_train, x_test, y_test, cs=(0.001, 1000.0))
    assert acc > 0.9 and c == 1000.0
    chance, _ = linear_probe(x_train, y_train, x_test, rng.permutation(y_test))
    assert chance < 0.5
