"""Every ReID attack stays in the epsilon ball and in [0, 1], is deterministic for a
seed, and moves features the way its definition says."""
from __future__ import annotations

import pytest
import torch

from benchbench.reid.attack import (farthest_feature, farthest_prototype, identity_prototypes,
                                    other_same_identity_guides, same_identity_guides)
from benchbench.reid.models import build_model

ATTACKS = ["none", "metric-fgsm", "metric-ifgsm", "metric-mifgsm", "pgd", "sma", "odfa", "fna"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("osnet_x0_25", num_classes=5).eval()  # the cheapest torchreid net


@pytest.fixture(scope="module")
def queries():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(12, 3, 32, 16, generator=g)
    images[0] = 0.0  # saturated images: projection must keep them in [0, 1]
    images[1] = 1.0
    return images, torch.tensor([1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 5, 5])


def make(registry, name, **params):
    return registry.get("attack", "reid", name)(params)


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("eps", [2.0, 8.0])
def test_epsilon_ball_range_and_determinism(registry, model, queries, name, eps):
    images, pids = queries
    params = {} if name == "none" else {"eps": eps}
    component = make(registry, name, **params)
    adv = component.build(model, seed=3)(images, pids)
    assert adv.shape == images.shape
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - images).abs().max() <= eps / 255 + 1e-6
    again = component.build(model, seed=3)(images, pids)
    assert torch.equal(adv, again)
    if name != "none":
        assert (adv - images).abs().max() > eps / 255 / 2  # it does move the images


@pytest.mark.parametrize("name", ["metric-fgsm", "metric-ifgsm", "metric-mifgsm"])
def test_bai_attacks_move_every_query_to_the_boundary(registry, model, queries, name):
    """A query alone in its identity (pid 4 here) used to be its own only guide: zero
    gradient, no random start, never perturbed. Now every query reaches the eps ball's
    boundary."""
    images, pids = queries
    assert (pids == 4).sum() == 1
    adv = make(registry, name, eps=8.0).build(model, seed=0)(images, pids)
    linf = (adv - images).flatten(1).abs().max(1).values
    assert torch.allclose(linf, torch.full_like(linf, 8 / 255), atol=1e-6), linf * 255


@pytest.mark.parametrize("name", ["metric-ifgsm", "pgd", "sma", "odfa", "fna"])
def test_attack_pushes_features_away(registry, model, queries, name):
    images, pids = queries
    with torch.no_grad():
        clean = model(images)
        adv = model(make(registry, name, eps=8.0).build(model, seed=0)(images, pids))
        noise = model((images + (torch.rand_like(images) * 2 - 1) * 8 / 255).clamp(0, 1))
    moved, by_noise = (adv - clean).norm(dim=1), (noise - clean).norm(dim=1)
    assert moved.mean() > 3 * by_noise.mean()


def test_model_mode_restored(registry, model, queries):
    model.train()
    make(registry, "sma").build(model)(*queries)
    assert model.training
    model.eval()


def test_guides():
    f = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.2, 0.0], [-3.0, 0.0]])
    pids = torch.tensor([1, 1, 2, 2, 3])
    g = same_identity_guides(f, pids)
    assert g.push.shape == (5, 2, 2) and g.push_mask.sum(1).tolist() == [2, 2, 2, 2, 1]
    assert torch.equal(g.push[4, 0], f[4])  # a lone identity guides itself
    others = other_same_identity_guides(f, pids)
    assert others.push.shape == (5, 1, 2) and others.push_mask.all()
    assert torch.equal(others.push[:, 0], f[[1, 0, 3, 2, 4]])  # the other image, or itself when alone
    assert others.random_start.tolist() == [False, False, False, False, True]
    ids, protos = identity_prototypes(f, pids)
    assert ids.tolist() == [1, 2, 3] and torch.allclose(protos[1], torch.tensor([5.1, 0.0]))
    assert torch.allclose(farthest_prototype(f, pids)[0], torch.tensor([5.1, 0.0]))
    assert torch.allclose(farthest_prototype(f, pids)[2], torch.tensor([-3.0, 0.0]))
    assert torch.equal(farthest_feature(f, pids)[4], f[3])


def test_label_use_is_declared(registry):
    uses = {n: registry.get("attack", "reid", n).uses_labels for n in [*ATTACKS, "uap", "blackbox-transfer"]}
    assert uses == {"none": False, "metric-fgsm": True, "metric-ifgsm": True, "metric-mifgsm": True,
                    "pgd": True, "sma": False, "odfa": False, "fna": True, "uap": False,
                    "blackbox-transfer": True}
