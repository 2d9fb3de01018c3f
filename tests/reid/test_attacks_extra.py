"""The attacks beyond per-query white-box ones: Bai's gallery attack, metric PGD, a
universal perturbation, black-box transfer from a surrogate, and GOAT's training
variants of metric-at. Each changes what it claims to and runs in a smoke cell."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from benchbench.reid.api import AttackContext
from benchbench.reid.attack import cross_set_guides
from benchbench.reid.data import ImageSet
from benchbench.reid.models import build_model

EPS = 8.0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("osnet_x0_25", num_classes=5).eval()


@pytest.fixture(scope="module")
def split():
    """Queries of ids 1-3, a gallery of ids 1-3 plus two distractors (id 0)."""
    g = torch.Generator().manual_seed(2)
    query = torch.rand(6, 3, 32, 16, generator=g), torch.tensor([1, 1, 2, 2, 3, 3])
    gallery = torch.rand(8, 3, 32, 16, generator=g), torch.tensor([1, 1, 2, 2, 3, 3, 0, 0])
    return query, gallery


def make(registry, name, **params):
    return registry.get("attack", "reid", name)(params)


def linf(a, b):
    return (a - b).flatten(1).abs().max(1).values


def test_cross_set_guides():
    guide_f = torch.tensor([[1.0], [2.0], [3.0]])
    g = cross_set_guides(guide_f, torch.tensor([5, 6, 5]), torch.tensor([6, 5, 0]))
    assert g.push_mask.tolist() == [[True, False], [True, True], [False, False]]
    assert g.push[1, :, 0].tolist() == [1.0, 3.0] and g.push[0, 0, 0] == 2.0


@pytest.mark.parametrize("name", ["metric-fgsm", "metric-ifgsm", "metric-mifgsm", "pgd"])
def test_gallery_attack_pushes_gallery_from_its_queries(registry, model, split, name):
    """perturb=gallery: every gallery image with a query of its identity moves within eps
    and away from those queries' features; distractors stay clean."""
    (q, qp), (g, gp) = split
    component = make(registry, name, eps=EPS, perturb="gallery")
    assert component.perturbs() == "gallery" and make(registry, name).perturbs() == "query"
    adv = component.build(model, seed=0)(g, gp, guide_images=q, guide_pids=qp)
    moved = linf(adv, g)
    assert adv.min() >= 0 and adv.max() <= 1
    assert (moved[:6] <= EPS / 255 + 1e-6).all() and (moved[:6] > EPS / 255 / 2).all()
    assert torch.equal(adv[6:], g[6:])
    with torch.no_grad():
        fq, fg, fa = (F.normalize(model(x), dim=1) for x in (q, g, adv))
    same = gp[:6, None] == qp[None, :]
    clean_d, adv_d = torch.cdist(fg[:6], fq)[same], torch.cdist(fa[:6], fq)[same]
    assert adv_d.mean() > clean_d.mean() * 1.5


def test_pgd_starts_at_random(registry, model, split):
    """pgd = Bai's objective with a random start: the seed changes the result, unlike
    metric-ifgsm (no random start) run with the same budget."""
    (q, qp), _ = split
    pgd = make(registry, "pgd", eps=EPS, steps=2)
    assert not torch.equal(pgd.build(model, seed=0)(q, qp), pgd.build(model, seed=1)(q, qp))
    ifgsm = make(registry, "metric-ifgsm", eps=EPS, alpha=2.0, steps=2)
    assert torch.equal(ifgsm.build(model, seed=0)(q, qp), ifgsm.build(model, seed=1)(q, qp))


def context(train: torch.Tensor, surrogates=None) -> AttackContext:
    n = len(train)
    images = (train * 255).round().to(torch.uint8)
    return AttackContext(ImageSet(images, torch.arange(n) % 4, torch.zeros(n, dtype=torch.long)),
                         surrogate=lambda arch: surrogates[arch])


def test_uap_is_one_perturbation_for_every_query(registry, model, split):
    """Fitted on training images only, the same delta is added to every query (up to the
    [0, 1] clip), within eps, and it moves unseen queries' features more than a random
    +-eps sign pattern does."""
    (q, qp), _ = split
    train = torch.rand(24, 3, 32, 16, generator=torch.Generator().manual_seed(9))
    component = make(registry, "uap", eps=EPS, epochs=2, batch_size=8)
    component.prepare(context(train))
    attack = component.build(model, seed=0)
    adv = attack(q, qp)
    delta = attack.delta
    assert delta.shape == (1, 3, 32, 16) and delta.abs().max() <= EPS / 255 + 1e-6
    assert torch.allclose(adv, (q + delta).clamp(0, 1))
    unclipped = ((q + delta) > 0) & ((q + delta) < 1)
    diff = adv - q
    assert torch.allclose(diff[unclipped], delta.expand_as(q)[unclipped], atol=1e-6)
    assert torch.equal(attack(q, qp), adv)  # fitted once, kept
    signs = torch.randint(0, 2, delta.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        clean = F.normalize(model(q), dim=1)
        moved = (F.normalize(model(adv), dim=1) - clean).norm(dim=1)
        by_noise = (F.normalize(model((q + signs * EPS / 255).clamp(0, 1)), dim=1) - clean).norm(dim=1)
    assert moved.mean() > 1.5 * by_noise.mean()


def test_uap_needs_the_training_set(registry, model):
    from benchbench.errors import ConfigError

    with pytest.raises(ConfigError, match="prepare"):
        make(registry, "uap").build(model)


def test_transfer_crafts_on_the_surrogate_only(registry, model, split):
    """The black-box images are the wrapped attack's images on the surrogate, whatever the
    target model: the target is never queried."""
    (q, qp), (g, gp) = split
    torch.manual_seed(5)
    surrogate = build_model("resnet18", num_classes=5).eval()
    other_target = build_model("osnet_x0_25", num_classes=5).eval()
    component = make(registry, "blackbox-transfer", surrogate="resnet18",
                     attack_params={"eps": EPS, "steps": 2})
    component.prepare(context(q, {"resnet18": surrogate}))
    adv = component.build(model, seed=0)(q, qp)
    assert torch.equal(adv, component.build(other_target, seed=0)(q, qp))
    direct = make(registry, "metric-ifgsm", eps=EPS, steps=2).build(surrogate, seed=0)(q, qp)
    assert torch.equal(adv, direct)
    assert (linf(adv, q) <= EPS / 255 + 1e-6).all()
    gallery = make(registry, "blackbox-transfer", attack_params={"perturb": "gallery"})
    assert gallery.perturbs() == "gallery"


def test_fna_push_only_has_no_pull_term(registry):
    from benchbench_reid_attacks.methods import FurthestNegativeAttack

    from benchbench.reid.attack import masked_sq_dist

    f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [6.0, 0.0]])
    pids = torch.tensor([1, 1, 2, 2])
    net = torch.nn.Linear(2, 2)  # torchattacks reads the device from a parameter
    push = FurthestNegativeAttack(net, eps=0.1, alpha=0.1, steps=1, pull="none")
    guides = push.guides(f, pids)
    assert guides.pull is None
    x = torch.tensor([[0.5, 0.0], [1.0, 1.0], [5.0, 0.0], [6.0, 2.0]])
    assert torch.equal(push.objective(x, guides), masked_sq_dist(x, guides.push, guides.push_mask))
    with pytest.raises(ValueError, match="no objective"):
        FurthestNegativeAttack(net, eps=0.1, alpha=0.1, steps=1, pull="none", push=False)


@pytest.mark.parametrize("guides, attack, extra", [
    ("push-pull", "fna", {"pull": "feature", "random_start": True}),
    ("push", "fna", {"pull": "none", "random_start": True}),
    ("self", "sma", {}),
])
def test_metric_at_goat_variants_build_their_training_attack(registry, guides, attack, extra):
    defense = registry.get("defense", "reid", "metric-at")({"guides": guides})
    built = []
    defense.on_train_start(SimpleNamespace(build_attack=lambda name, params: built.append((name, params))))
    assert built == [(attack, {"eps": 8.0, "alpha": 3.0, "steps": 3, **extra})]
    assert defense.trained_against() == (attack,)
    registry.get("attack", "reid", attack)(built[0][1])  # the params are the attack's own


SMOKE_CELLS = [("pgd", {}), ("metric-ifgsm", {"perturb": "gallery"}), ("uap", {}), ("blackbox-transfer", {}),
               ("blackbox-transfer", {"attack": "uap"})]


@pytest.mark.parametrize("name, params", SMOKE_CELLS, ids=[f"{n}{p}" for n, p in SMOKE_CELLS])
def test_new_attacks_run_a_smoke_cell(registry, reid_context, name, params):
    result = reid_context.check(registry.get("attack", "reid", name), params)
    assert 0 <= result["metrics"]["reid-rank"]["mAP"]["value"] <= 1


@pytest.mark.parametrize("guides", ["push", "self"])
def test_metric_at_goat_variants_run_a_smoke_cell(registry, reid_context, guides):
    result = reid_context.check(registry.get("defense", "reid", "metric-at"), {"guides": guides}, attack="sma")
    assert result["stages"].get("reid-model:build") == 1


def test_transfer_from_the_targets_own_architecture_is_a_one_line_error(reid_context):
    with pytest.raises(AssertionError, match="ConfigError: surrogate architecture 'osnet_x0_25' is the target"):
        reid_context.run(attack={"name": "blackbox-transfer", "params": {"surrogate": "osnet_x0_25"}})
