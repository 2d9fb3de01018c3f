"""Backdoor triggers: BadNets (a patch) and Blended (a faint full-image pattern).

Everything else a backdoor does (which pairs, which captions, the ASR probe) lives in
``benchbench.clip.poisoning.BackdoorAttack``; these classes only draw their triggers on
uint8 image batches. Two kinds of trigger:

- one pattern fixed by ``pattern_seed``, the same on every poisoned training image and
  every triggered test image (BadNets' ``noise``/``checkerboard`` patches, Blended's
  default): the easier backdoor our CPU presets use;
- CleanCLIP's (``backdoor/utils.py::apply_trigger`` in nishadsinghi/CleanCLIP): noise
  drawn afresh for every image (BadNets ``pattern: gaussian``, the image's per-channel
  mean plus standard normal noise; Blended ``redraw: true``, uniform noise). The ``paper``
  presets use it. Fresh noise comes from the generator ``apply_trigger`` is given (seeded
  with the cell's seed), drawn for the whole batch at once: image i's noise depends only
  on the seed and i, never on the global RNG.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from benchbench.clip.poisoning import BackdoorAttack

CLEANCLIP_SIDE = 224  # CleanCLIP resizes every image to 224 px before adding its trigger


def _noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)


def _fixed_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return _noise(shape, torch.Generator().manual_seed(seed))


class BadNets(BackdoorAttack):
    name = "badnets"
    description = "BadNets: a small noise or checkerboard patch, captions naming the target class"

    class Params(BackdoorAttack.Params):
        patch: float = Field(0.125, gt=0, le=0.5, description="patch side as a fraction of the image side "
                                                               "(CleanCLIP: 16 px of 224 = 0.07)")
        pattern: Literal["noise", "checkerboard", "gaussian"] = Field(
            "noise", description="what the patch shows: one fixed uniform noise patch, a checkerboard, or "
                                 "CleanCLIP's image mean + N(0, 1) noise drawn afresh for every image")
        position: Literal["random", "corner"] = Field("random", description="patch position on each image "
                                                                             "(random, as CleanCLIP) or the "
                                                                             "bottom-right corner")
        pattern_seed: int = Field(0, description="seed of the fixed noise pattern")

    # The tiny 32 px ViT (8 px patches) does not learn CleanCLIP's small random-position
    # noise patch from 1% poison in the default budget (ASR ~0.1, measured): the CPU
    # presets use BadNets' original fixed corner patch, one ViT patch in size. ``paper``
    # is CleanCLIP's code: a 16/224 patch of fresh Gaussian noise at a random position,
    # captioned with CLIP's 80 ImageNet templates.
    presets: ClassVar = {
        "smoke": {"patch": 0.25, "pattern": "checkerboard", "position": "corner"},
        "default": {"patch": 0.25, "pattern": "checkerboard", "position": "corner"},
        "paper": {"patch": 16 / CLEANCLIP_SIDE, "pattern": "gaussian", "position": "random",
                  "captions": "imagenet-templates"},
    }

    def patch_pattern(self, side: int) -> torch.Tensor:
        """The fixed (3, side, side) uint8 patch (patterns ``noise`` and ``checkerboard``)."""
        if self.params.pattern == "noise":
            return _fixed_noise((3, side, side), self.params.pattern_seed)
        board = (torch.arange(side).view(-1, 1) + torch.arange(side).view(1, -1)) % 2
        return (board * 255).to(torch.uint8).expand(3, side, side)

    @staticmethod
    def gaussian_patches(images: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
        """(B, 3, side, side) uint8 patches: each image's per-channel mean plus N(0, 1) noise
        in [0, 1] units, fresh per image (CleanCLIP's ``patch_type='random'``). Clamped to
        [0, 1]: CleanCLIP leaves out-of-range values to its float-to-uint8 conversion."""
        mean = images.float().mean(dim=(2, 3), keepdim=True) / 255
        noise = torch.randn((len(images), 3, side, side), generator=generator)
        return ((mean + noise).clamp(0, 1) * 255).round().to(torch.uint8)

    def apply_trigger(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        size = images.shape[-1]
        side = max(2, round(self.params.patch * size))
        if self.params.position == "corner":
            ys = xs = torch.full((len(images),), size - side)
        else:
            ys = torch.randint(0, size - side + 1, (len(images),), generator=generator)
            xs = torch.randint(0, size - side + 1, (len(images),), generator=generator)
        if self.params.pattern == "gaussian":
            patches = self.gaussian_patches(images, side, generator)
        else:
            patches = self.patch_pattern(side).expand(len(images), 3, side, side)
        out = images.clone()
        for image, patch, y, x in zip(out, patches, ys.tolist(), xs.tolist()):
            image[:, y:y + side, x:x + side] = patch
        return out


class Blended(BackdoorAttack):
    name = "blended"
    description = "Blended: a noise image alpha-blended over the whole image"

    class Params(BackdoorAttack.Params):
        alpha: float = Field(0.2, gt=0, lt=1, description="blend weight of the noise pattern")
        grain: float = Field(0.125, gt=0, le=1, description="side of the noise pattern's cells as a fraction "
                                                            "of the image side (1 / image size: pixel noise)")
        redraw: bool = Field(False, description="draw a new noise image for every image (CleanCLIP) instead "
                                                "of one pattern fixed by pattern_seed")
        pattern_seed: int = Field(0, description="seed of the fixed noise pattern")

    # At Chen et al.'s alpha 0.2 the tiny CPU model learns the blend from 1% poison only
    # to ASR ~0.3 (measured; 0.5: ~0.74, 0.6: ~0.97): the CPU presets use a strong,
    # clearly visible blend of one fixed pattern of patch-sized noise cells. ``paper`` is
    # CleanCLIP's code: 0.8 x + 0.2 u, u uniform pixel noise drawn afresh for every image
    # (224 x 224 cells, i.e. one per pixel at any size up to 224), captioned with CLIP's
    # 80 ImageNet templates.
    presets: ClassVar = {
        "smoke": {"alpha": 0.6, "grain": 0.25},
        "default": {"alpha": 0.6, "grain": 0.25},
        "paper": {"alpha": 0.2, "grain": 1 / CLEANCLIP_SIDE, "redraw": True, "captions": "imagenet-templates"},
    }

    def cells(self) -> int:
        return max(1, round(1 / self.params.grain))

    def pattern(self, size: int) -> torch.Tensor:
        """The fixed (3, size, size) uint8 noise image: random cells of ``grain`` * size pixels."""
        return self.upsample(_fixed_noise((1, 3, self.cells(), self.cells()), self.params.pattern_seed), size)[0]

    @staticmethod
    def upsample(cells: torch.Tensor, size: int) -> torch.Tensor:
        return torch.nn.functional.interpolate(cells.float(), size=(size, size), mode="nearest").to(torch.uint8)

    def apply_trigger(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        size = images.shape[-1]
        if self.params.redraw:
            noise = self.upsample(_noise((len(images), 3, self.cells(), self.cells()), generator), size).float()
        else:
            noise = self.pattern(size).float()
        blended = (1 - self.params.alpha) * images.float() + self.params.alpha * noise
        return blended.round().clamp(0, 255).to(torch.uint8)
