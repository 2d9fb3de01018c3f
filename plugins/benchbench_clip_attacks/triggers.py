"""Backdoor triggers: BadNets (a patch) and Blended (a faint full-image pattern).

Everything else a backdoor does (which pairs, which captions, the ASR probe) lives in
``benchbench.clip.poisoning.BackdoorAttack``; these classes only draw their triggers on
uint8 image batches. Both patterns are fixed by ``pattern_seed``: the same trigger on
every poisoned training image and every triggered test image.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from benchbench.clip.poisoning import BackdoorAttack


def _noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


class BadNets(BackdoorAttack):
    name = "badnets"
    description = "BadNets: a small noise or checkerboard patch, captions naming the target class"

    class Params(BackdoorAttack.Params):
        patch: float = Field(0.125, gt=0, le=0.5, description="patch side as a fraction of the image side "
                                                               "(CleanCLIP: 16 px of 224 = 0.07)")
        pattern: Literal["noise", "checkerboard"] = Field("noise", description="what the patch shows")
        position: Literal["random", "corner"] = Field("random", description="patch position on each image "
                                                                             "(random, as CleanCLIP) or the "
                                                                             "bottom-right corner")
        pattern_seed: int = Field(0, description="seed of the noise pattern")

    # The tiny 32 px ViT (8 px patches) does not learn CleanCLIP's small random-position
    # noise patch from 1% poison in the default budget (ASR ~0.1, measured): the CPU
    # presets use BadNets' original fixed corner patch, one ViT patch in size.
    presets: ClassVar = {
        "smoke": {"patch": 0.25, "pattern": "checkerboard", "position": "corner"},
        "default": {"patch": 0.25, "pattern": "checkerboard", "position": "corner"},
    }

    def patch_pattern(self, side: int) -> torch.Tensor:
        """The (3, side, side) uint8 patch."""
        if self.params.pattern == "noise":
            return _noise((3, side, side), self.params.pattern_seed)
        board = (torch.arange(side).view(-1, 1) + torch.arange(side).view(1, -1)) % 2
        return (board * 255).to(torch.uint8).expand(3, side, side)

    def apply_trigger(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        size = images.shape[-1]
        side = max(2, round(self.params.patch * size))
        pattern = self.patch_pattern(side)
        if self.params.position == "corner":
            ys = xs = torch.full((len(images),), size - side)
        else:
            ys = torch.randint(0, size - side + 1, (len(images),), generator=generator)
            xs = torch.randint(0, size - side + 1, (len(images),), generator=generator)
        out = images.clone()
        for image, y, x in zip(out, ys.tolist(), xs.tolist()):
            image[:, y:y + side, x:x + side] = pattern
        return out


class Blended(BackdoorAttack):
    name = "blended"
    description = "Blended: a fixed noise image alpha-blended over the whole image"

    class Params(BackdoorAttack.Params):
        alpha: float = Field(0.2, gt=0, lt=1, description="blend weight of the noise pattern")
        grain: float = Field(0.125, gt=0, le=1, description="side of the noise pattern's cells as a fraction "
                                                            "of the image side (1 / image size: pixel noise)")
        pattern_seed: int = Field(0, description="seed of the noise pattern")

    # At Chen et al.'s alpha 0.2 the tiny CPU model learns the blend from 1% poison only
    # to ASR ~0.3 (measured; 0.5: ~0.74, 0.6: ~0.97): the CPU presets use a strong,
    # clearly visible blend of patch-sized noise cells. ``paper`` keeps the class defaults.
    presets: ClassVar = {
        "smoke": {"alpha": 0.6, "grain": 0.25},
        "default": {"alpha": 0.6, "grain": 0.25},
    }

    def pattern(self, size: int) -> torch.Tensor:
        """The (3, size, size) uint8 noise image: random cells of ``grain`` * size pixels."""
        cells = max(1, round(1 / self.params.grain))
        coarse = _noise((1, 3, cells, cells), self.params.pattern_seed)
        return torch.nn.functional.interpolate(coarse.float(), size=(size, size), mode="nearest")[0].to(torch.uint8)

    def apply_trigger(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = self.pattern(images.shape[-1]).float()
        blended = (1 - self.params.alpha) * images.float() + self.params.alpha * noise
        return blended.round().clamp(0, 255).to(torch.uint8)
