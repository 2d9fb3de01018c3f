"""MID: its pool's meta-tasks, the three consistency terms, the teacher's decoder, and one
smoke cell (contract, frozen teacher head, cached decoder stage)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchbench.errors import ConfigError
from benchbench.reid.data import load_reid_data
from benchbench.reid.models import load_model
from benchbench.reid.pipeline import data_source, model_stage, reference_stage
from benchbench_mid import MID
from benchbench_mid.consistency import cyclic_kl, feature_kl
from benchbench_mid.decoder import FeatureDecoder, train_decoder
from benchbench_mid.phase import MetaInvariancePhase


def test_trained_against_is_the_pool_without_the_clean_member():
    assert MID().trained_against() == ("sma", "fna", "metric-mifgsm")
    assert MID({"attack_pool": ["none", "odfa"]}).trained_against() == ("odfa",)


def test_pool_must_list_distinct_members():
    with pytest.raises(ConfigError, match="twice"):
        MID({"attack_pool": ["sma", "sma"]})


@pytest.mark.parametrize("k, size", [(1, 1), (2, 2), (None, 3), (9, 3)])
def test_each_step_holds_one_member_out_and_meta_trains_on_others(k, size):
    phase = SimpleNamespace(p=SimpleNamespace(attack_pool=["none", "sma", "fna", "metric-mifgsm"],
                                              meta_train_attacks=k))
    gen = torch.Generator().manual_seed(0)
    draws = [MetaInvariancePhase.draw(phase, gen) for _ in range(40)]
    for meta_train, held_out in draws:
        assert len(meta_train) == size and held_out not in meta_train and len(set(meta_train)) == size
    assert {h for _, h in draws} == {"none", "sma", "fna", "metric-mifgsm"}  # every member gets held out


def test_feature_kl_is_the_mean_kl_of_the_softmaxed_features():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    p, q = F.softmax(teacher, 1), F.softmax(student, 1)
    expected = (p * (p.log() - q.log())).sum() / p.numel()
    assert float(feature_kl(student, teacher)) == pytest.approx(float(expected), rel=1e-5)
    assert float(feature_kl(teacher + 3.0, teacher)) == pytest.approx(0.0, abs=1e-7)  # softmax ignores shifts


def test_cyclic_consistency_trains_the_student_only():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    decoder = FeatureDecoder(4, (8, 4), (8,)).eval()
    for m in (teacher, decoder):
        m.requires_grad_(False)
    student = torch.randn(2, 4, requires_grad=True)
    loss = cyclic_kl(student, teacher(torch.rand(2, 3, 8, 4)), decoder, teacher)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert all(p.grad is None for p in [*teacher.parameters(), *decoder.parameters()])


def test_decoder_images_have_the_data_size_and_range():
    with torch.no_grad():
        out = FeatureDecoder(16, (30, 14), (8, 4)).eval()(torch.randn(3, 16))
    assert out.shape == (3, 3, 30, 14) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_decoder_learns_to_reconstruct_from_the_teachers_embedding():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    colours = torch.rand(32, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    images = (colours.repeat(1, 1, 16, 8) * 255).to(torch.uint8)  # what a pooled embedding can carry
    _, losses = train_decoder(teacher, images, (16, 8), steps=150, batch_size=16, lr=3e-3, seed=0)
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10
    again, _ = train_decoder(teacher, images, (16, 8), steps=5, batch_size=16, lr=3e-3, seed=0)
    first, _ = train_decoder(teacher, images, (16, 8), steps=5, batch_size=16, lr=3e-3, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), first.state_dict().values()))


def test_runs_in_a_reid_smoke_cell_under_the_teachers_frozen_head(reid_context):
    result = reid_context.check(MID)
    assert result["components"]["defense"]["trained_against"] == ["sma", "fna", "metric-mifgsm"]

    task, ctx = reid_context.task, reid_context.ctx
    data_key, root = data_source(task, ctx)
    data = load_reid_data(root, (task.params.height, task.params.width), task.params.layout)
    student_stage = model_stage(task, MID(preset="smoke"), data, data_key, ctx, root)
    assert student_stage.hit  # trained by the cell above
    teacher_stage = reference_stage(task, data, data_key, ctx, root)
    assert teacher_stage.hit and teacher_stage.key != student_stage.key
    student, teacher = load_model(student_stage.path), load_model(teacher_stage.path)
    assert torch.equal(student.backbone.classifier.weight, teacher.backbone.classifier.weight)
    trunk = [k for k in teacher.state_dict() if not k.startswith("backbone.classifier")]
    assert any(not torch.equal(student.state_dict()[k], teacher.state_dict()[k]) for k in trunk)
    assert len(list((ctx.cache.root / "mid-decoder").glob("*/decoder.safetensors"))) == 1
