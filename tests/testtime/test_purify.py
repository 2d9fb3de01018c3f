"""The purifiers themselves: what each transform does to an image and what gradient an
attacker gets through it (exact, BPDA's identity, or none)."""
from __future__ import annotations

import pytest
import torch

from benchbench.purify import Jpeg, Median, Purified, jpeg, median_filter
from benchbench.reid.diffusion import ConditionalUNet
from benchbench_testtime.diffpure import DiffusionPurifier, timesteps


def noisy_images(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 16, 8, generator=gen)


def test_median_removes_an_isolated_pixel_and_keeps_flat_images():
    flat = torch.full((1, 3, 8, 8), 0.5)
    salted = flat.clone()
    salted[0, :, 4, 4] = 1.0
    assert torch.equal(median_filter(salted, 3), flat)
    assert torch.equal(median_filter(flat, 5), flat)


def test_jpeg_compresses_and_lower_quality_loses_more():
    x = noisy_images()
    coarse, fine = jpeg(x, 10), jpeg(x, 95)
    assert coarse.shape == x.shape and 0 <= coarse.min() and coarse.max() <= 1
    assert (fine - x).abs().mean() < (coarse - x).abs().mean()
    assert not torch.equal(coarse, x)


def test_bpda_is_the_purifier_forward_and_the_identity_backward():
    x = noisy_images().requires_grad_(True)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    out = Jpeg(50, bpda=True)(x)
    assert torch.equal(out, jpeg(x.detach(), 50))
    (out * weights).sum().backward()
    assert torch.equal(x.grad, weights)


def test_a_non_differentiable_purifier_gives_no_gradient_without_bpda():
    x = noisy_images().requires_grad_(True)
    assert not Jpeg(50)(x).requires_grad


def test_median_is_differentiated_exactly_unless_bpda():
    x = noisy_images().requires_grad_(True)
    Median(3)(x).sum().backward()
    exact = x.grad.clone()
    # each output pixel sends its gradient to the one input pixel that is its window's median
    assert exact.sum().item() == pytest.approx(x.numel())
    assert not torch.equal(exact, torch.ones_like(exact))
    x.grad = None
    Median(3, bpda=True)(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_purified_model_runs_the_purifier_first_and_freezes_it():
    unet = ConditionalUNet(1, 1, (16, 8), (16, 32))
    net = torch.nn.Flatten()
    model = Purified(net, DiffusionPurifier(unet, [20, 10], seed=0))
    assert not any(p.requires_grad for p in model.purifier.parameters())
    x = noisy_images()
    assert torch.equal(Purified(net, Median(3))(x), net(median_filter(x, 3)))


def test_diffpure_timesteps_are_respaced_down_from_t_star():
    assert timesteps(0.1, 5, 1000) == [100, 80, 60, 40, 20]
    assert timesteps(0.1, 1, 1000) == [100]
    assert timesteps(0.001, 4, 1000) == [1]


def test_diffusion_purifier_is_seeded_stochastic_and_differentiable():
    torch.manual_seed(0)
    unet = ConditionalUNet(1, 1, (16, 8), (16, 32)).eval().requires_grad_(False)
    x = noisy_images()
    a = DiffusionPurifier(unet, [100, 50], seed=3)
    b = DiffusionPurifier(unet, [100, 50], seed=3)
    first = a(x)
    assert first.shape == x.shape and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, b(x))  # one seed, one sequence of draws
    assert not torch.equal(a(x), first)  # a fresh draw on every call
    xg = x.clone().requires_grad_(True)
    DiffusionPurifier(unet, [100, 50], seed=3)(xg).sum().backward()
    assert xg.grad.abs().sum() > 0
