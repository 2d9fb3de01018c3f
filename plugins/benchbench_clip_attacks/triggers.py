"""Backdoor triggers: BadNets (a patch), Blended (a faint full-image pattern), SIG (a
sinusoidal signal), WaNet (a warp), and label-consistent BadNets.

Everything else a backdoor does (which pairs, which captions, the ASR probe) lives in
``benchbench.clip.poisoning.BackdoorAttack``; these classes draw their triggers on uint8
image batches (the label-consistent variant also picks its rows and keeps their
captions). Two kinds of trigger:

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

from typing import ClassVar, Literal, Sequence

import numpy as np
import torch
from pydantic import Field

from benchbench.clip.poisoning import BackdoorAttack, rows_naming
from benchbench.errors import DataError

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


class SIG(BackdoorAttack):
    """SIG (Barni, Kallas & Tondi, ICIP 2019): a horizontal sinusoid over the whole image,
    ``v(i, j) = delta * sin(2 pi j f / m)`` for column j of m.

    Read from SCLBD/BackdoorBench (``utils/bd_img_transform/sig.py``: ``x + v``, clipped,
    delta 40, f 6; there a clean-label attack on the target class's images) and
    nishadsinghi/CleanCLIP (``backdoor/utils.py``, ``patch_type='SIG'``: ``(60/255) sin(2 pi
    j 6 / 224)``, mixed in as ``0.8 x + 0.2 v`` by its ``blended`` location). On CLIP it is,
    as in CleanCLIP, a dirty-label backdoor: any poisoned image, captions naming the target.
    """

    name = "sig"
    description = "SIG: a sinusoidal signal added over the whole image, captions naming the target class"

    class Params(BackdoorAttack.Params):
        delta: float = Field(40, gt=0, le=255, description="signal amplitude in pixel values (BackdoorBench: 40; "
                                                           "CleanCLIP: 60 before its 0.2 blend)")
        frequency: float = Field(6, gt=0, description="periods of the sinusoid across the image width (6)")
        blend: float | None = Field(None, gt=0, lt=1, description="None: add the signal to the image (Barni et "
                                                                  "al., BackdoorBench); w: (1 - w) x + w v "
                                                                  "(CleanCLIP, w = 0.2)")

    # BackdoorBench's additive delta 40 (a 16% swing of the pixel range) on the CPU
    # presets; ``paper`` is CleanCLIP's code: 0.8 x + 0.2 * 60 sin(...), ImageNet templates.
    presets: ClassVar = {
        "smoke": {},
        "default": {},
        "paper": {"delta": 60, "blend": 0.2, "captions": "imagenet-templates"},
    }

    def signal(self, size: int) -> torch.Tensor:
        """The (size,) signal of the columns: every row and channel gets the same one."""
        columns = torch.arange(size, dtype=torch.float64)
        return (self.params.delta * torch.sin(2 * torch.pi * columns * self.params.frequency / size)).float()

    def apply_trigger(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        v = self.signal(images.shape[-1])
        x = images.float()
        w = self.params.blend
        out = x + v if w is None else (1 - w) * x + w * v
        return out.round().clamp(0, 255).to(torch.uint8)


class WaNet(BackdoorAttack):
    """WaNet (Nguyen & Tran, ICLR 2021): a smooth, fixed warp of the whole image.

    Read from SCLBD/BackdoorBench (``attack/wanet.py``) and nishadsinghi/CleanCLIP
    (``backdoor/utils.py``, ``patch_type='warped'``), which build the warp the same way:
    ``k x k`` uniform control offsets in [-1, 1] scaled to mean magnitude 1, upsampled
    bicubically to the image, ``grid = clamp((identity + s * noise / size) * grid_rescale,
    -1, 1)``, applied with ``grid_sample(align_corners=True)``. BackdoorBench's defaults
    are k 4, s 0.5 (a quarter-pixel shift at 32 px); CleanCLIP's k 224, s 1. WaNet's
    "noise mode" (extra pairs warped by a random grid, keeping their labels) trains
    classifiers to tell the warp from noise; CleanCLIP does not use it and neither do we.
    The noise grid is fixed by ``pattern_seed`` (BackdoorBench and CleanCLIP save theirs).
    """

    name = "wanet"
    description = "WaNet: a fixed smooth warp of the whole image, captions naming the target class"

    class Params(BackdoorAttack.Params):
        k: int = Field(4, ge=2, description="side of the grid of random control offsets (BackdoorBench: 4, "
                                            "CleanCLIP: 224)")
        s: float = Field(0.5, gt=0, description="warp strength: the mean shift is about s / 2 pixels "
                                                "(BackdoorBench: 0.5, CleanCLIP: 1)")
        grid_rescale: float = Field(1.0, gt=0, description="scale of the sampling grid (1: none)")
        pattern_seed: int = Field(0, description="seed of the fixed noise grid")

    # A quarter-pixel warp is invisible to the tiny 32 px ViT: the CPU presets warp by
    # about 2 px (s 4), a clearly visible wobble of every edge. ``paper`` is CleanCLIP's.
    presets: ClassVar = {
        "smoke": {"s": 4.0},
        "default": {"s": 4.0},
        "paper": {"k": 224, "s": 1.0, "captions": "imagenet-templates"},
    }

    def grid(self, size: int) -> torch.Tensor:
        """The (1, size, size, 2) sampling grid, (x, y) in [-1, 1] as ``grid_sample`` reads it."""
        p = self.params
        generator = torch.Generator().manual_seed(p.pattern_seed)
        ins = torch.rand((1, 2, p.k, p.k), generator=generator) * 2 - 1
        ins = ins / ins.abs().mean()
        noise = torch.nn.functional.interpolate(ins, size=size, mode="bicubic", align_corners=True)
        axis = torch.linspace(-1, 1, steps=size)
        y, x = torch.meshgrid(axis, axis, indexing="ij")
        identity = torch.stack((x, y), dim=-1)[None]
        return ((identity + p.s * noise.permute(0, 2, 3, 1) / size) * p.grid_rescale).clamp(-1, 1)

    def apply_trigger(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        grid = self.grid(images.shape[-1]).expand(len(images), -1, -1, -1)
        warped = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", align_corners=True)
        return warped.round().clamp(0, 255).to(torch.uint8)


class LabelConsistent(BadNets):
    """Label-consistent backdoor, CleanCLIP's definition (``backdoor/create_backdoor_data.py
    --label_consistent``): the trigger goes only on training images whose own captions
    already name the target class, and those captions are kept, so no pair is mislabelled
    and a filter of mismatched pairs has nothing to find. The trigger is BadNets' patch
    (CleanCLIP's default ``patch_type``). Turner et al.'s label-consistent attack
    (BackdoorBench ``attack/lc.py``) also perturbs the poisoned images adversarially to make
    them hard to classify without the trigger; that needs a trained surrogate model, and
    CleanCLIP's CLIP variant does without it, as here.
    """

    name = "label-consistent"
    description = "label-consistent BadNets: the patch on images whose own captions name the target, captions kept"

    class Params(BadNets.Params):
        captions: Literal["own"] = Field("own", description="every poisoned image keeps its own caption, which "
                                                            "names the target class (label-consistent)")

    presets: ClassVar = {preset: {k: v for k, v in overrides.items() if k != "captions"}
                         for preset, overrides in BadNets.presets.items()}

    def poison_rows(self, train_captions: list[str], classes: Sequence[str], target: int, n: int,
                    rng: np.random.Generator) -> np.ndarray:
        candidates = rows_naming(train_captions, classes, target)
        if len(candidates) < n:
            raise DataError(f"label-consistent poisoning needs {n} training captions naming '{classes[target]}' "
                            f"alone, the data has {len(candidates)}; lower poison_rate or choose another target")
        return np.sort(rng.choice(candidates, size=n, replace=False))

    def captions_for(self, train_captions: list[str], rows: np.ndarray, classes: Sequence[str], target: int,
                     rng: np.random.Generator) -> list[str]:
        return [train_captions[row] for row in rows]
