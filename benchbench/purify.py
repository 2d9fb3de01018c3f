"""Test-time input purification, shared by both tracks: the purifier contract, the two
cheap transforms (JPEG, median filter) and the wrapper that puts a purifier in front of a
network.

A ``Purifier`` is a ``torch.nn.Module`` from float images in [0, 1], (B, 3, H, W), to
float images in [0, 1] of the same shape. Everything that sees the defended model calls
it: the evaluators' feature extraction (queries and gallery in ReID, every image a CLIP
evaluator encodes) and the attacks' forward passes. Its backward pass is what an attacker
gets:

- a ``differentiable`` purifier (median filter, diffusion) is differentiated exactly,
  unless ``bpda`` is set;
- ``bpda``: Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner,
  "Obfuscated Gradients Give a False Sense of Security", ICML 2018): the purifier in the
  forward pass, the identity in the backward pass. It is what makes a non-differentiable
  purifier (JPEG: a uint8 encode/decode) attackable at all.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF


class _IdentityBackward(torch.autograd.Function):
    """Forward: the purified images; backward: the gradient passed to the inputs unchanged."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, purified: torch.Tensor) -> torch.Tensor:
        return purified.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class Purifier(nn.Module):
    """Base of the purifiers: subclasses implement ``purify``; ``forward`` adds BPDA."""

    differentiable: ClassVar[bool] = True

    def __init__(self, bpda: bool = False):
        super().__init__()
        self.bpda = bpda

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.bpda:
            return self.purify(x)
        with torch.no_grad():
            purified = self.purify(x)
        return _IdentityBackward.apply(x, purified)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress float [0, 1] images at ``quality`` (torchvision's encoder and decoder)."""
    images = x.detach().mul(255).round().clamp(0, 255).to(torch.uint8).cpu()
    return TF.jpeg(images, quality).to(x.device, x.dtype).div(255)


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Per-channel median over ``size`` x ``size`` windows (reflect-padded edges)."""
    pad = size // 2
    windows = F.pad(x, (pad, pad, pad, pad), mode="reflect").unfold(2, size, 1).unfold(3, size, 1)
    return windows.reshape(*x.shape, size * size).median(dim=-1).values


class Jpeg(Purifier):
    """JPEG compression (Dziugaite et al. 2016; Guo et al. 2018): not differentiable."""

    differentiable = False

    def __init__(self, quality: int, bpda: bool = False):
        super().__init__(bpda)
        self.quality = quality

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return jpeg(x, self.quality)


class Median(Purifier):
    """Median smoothing, the spatial-smoothing squeezer of Xu et al. 2018: differentiable
    almost everywhere (the gradient reaches each window's median pixel)."""

    def __init__(self, size: int, bpda: bool = False):
        super().__init__(bpda)
        self.size = size

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return median_filter(x, self.size)


class Purified(nn.Module):
    """``net(purifier(x))``: the model an attack and the evaluators see under a test-time
    defense. The purifier's own weights (a diffusion UNet) are frozen."""

    def __init__(self, net: nn.Module, purifier: Purifier):
        super().__init__()
        self.net, self.purifier = net, purifier.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.purifier(x))
