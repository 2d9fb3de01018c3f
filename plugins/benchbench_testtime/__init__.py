"""Test-time defenses for both tracks: input purifiers in front of the ``none`` model.

Each defense here has ``test_time = True``: the task does not train it, it evaluates the
``none`` defense's model of the same data and seed (a cache hit in a grid with ``none``)
behind the defense's purifier (``benchbench.purify``). Its cell key is its own (name,
version, params), so its rows never mix with ``none``'s; its model stage is ``none``'s.
Their ``cost`` rows are that model's training cost (they train nothing more); what
purifying costs is in the cells' wall time. Composing a purifier with a trained defense is a training defense overriding
``purifier`` (see docs/writing-a-plugin.md); we ship the purifiers alone so that each row
measures the purifier alone.

- ``jpeg`` (both tracks): JPEG compression at ``quality`` (Dziugaite et al., "A study of
  the effect of JPG compression on adversarial images", 2016; Guo et al., "Countering
  Adversarial Images using Input Transformations", ICLR 2018), torchvision's codec;
- ``median`` (both tracks): median smoothing over ``size`` x ``size`` windows, the
  spatial-smoothing squeezer of Xu et al., "Feature Squeezing", NDSS 2018;
- ``diffpure`` (ReID): DiffPure (Nie et al., "Diffusion Models for Adversarial
  Purification", ICML 2022), see ``benchbench_testtime.diffpure``.

ReID attacks are gradient attacks on the defended model, so the ReID classes have a
``bpda`` param (Athalye et al. 2018): identity in the backward pass. Without it, a
differentiable purifier (median, diffusion) is differentiated exactly and JPEG, which
is not differentiable, is attacked *obliviously* (the attack is crafted on the bare
model, then purified). The board labels each ReID row with which it was
(``[attacker: exact | bpda | oblivious]``). The CLIP attacks are data poisoning: their
triggered probe images go through the purifier, no gradient is involved. ``jpeg`` and
``median`` have no presets: nothing in them scales with the budget.
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

import benchbench
from benchbench.api import Params
from benchbench.clip.api import ClipDefense
from benchbench.reid.api import ReidDefense

__version__ = "1.0"


def attacker_gradient(differentiable: bool, bpda: bool) -> str:
    """``Defense.attacker_gradient`` of a purifier: BPDA if asked, else exact or oblivious."""
    return "bpda" if bpda else ("exact" if differentiable else "oblivious")


class JpegParams(Params):
    quality: int = Field(75, ge=1, le=100, description="JPEG quality (Guo et al. 2018 use 75)")


class MedianParams(Params):
    size: int = Field(3, ge=3, description="odd window side in pixels (Xu et al. 2018: 2 or 3 on CIFAR-10)")

    @field_validator("size")
    @classmethod
    def _odd(cls, size: int) -> int:
        if size % 2 == 0:
            raise ValueError(f"must be odd (a window centred on its pixel), got {size}")
        return size


class Bpda(Params):
    bpda: bool = Field(False, description="attack through the purifier with an identity backward pass "
                                          "(BPDA, Athalye et al. 2018); false: its exact gradient, or for a "
                                          "non-differentiable purifier an attack crafted on the bare model")


class ClipJpeg(ClipDefense):
    name = "jpeg"
    description = "test-time JPEG compression of every evaluated image, on the none defense's model"
    test_time = True
    Params = JpegParams
    def purifier(self, ctx):
        from benchbench.purify import Jpeg

        return Jpeg(self.params.quality)


class ClipMedian(ClipDefense):
    name = "median"
    description = "test-time median filter of every evaluated image, on the none defense's model"
    test_time = True
    Params = MedianParams
    def purifier(self, ctx):
        from benchbench.purify import Median

        return Median(self.params.size)


class ReidJpeg(ReidDefense):
    name = "jpeg"
    description = "test-time JPEG compression of queries and gallery, on the none defense's model"
    test_time = True

    class Params(JpegParams, Bpda):
        pass

    def attacker_gradient(self) -> str:
        return attacker_gradient(False, self.params.bpda)

    def purifier(self, train, data_key, ctx):
        from benchbench.purify import Jpeg

        return Jpeg(self.params.quality, bpda=self.params.bpda)


class ReidMedian(ReidDefense):
    name = "median"
    description = "test-time median filter of queries and gallery, on the none defense's model"
    test_time = True

    class Params(MedianParams, Bpda):
        pass

    def attacker_gradient(self) -> str:
        return attacker_gradient(True, self.params.bpda)

    def purifier(self, train, data_key, ctx):
        from benchbench.purify import Median

        return Median(self.params.size, bpda=self.params.bpda)


class DiffPure(ReidDefense):
    name = "diffpure"
    description = ("test-time diffusion purification (DiffPure): queries and gallery noised to t* and "
                   "denoised by the track's diffusers generator, on the none defense's model")
    test_time = True

    class Params(Bpda):
        t_star: float = Field(0.1, gt=0, lt=1, description="diffusion time the images are noised to, as a "
                                                           "share of the 1000 training timesteps (DiffPure: 0.1)")
        denoise_steps: int = Field(5, ge=1, description="DDPM ancestral steps from t* back to 0 (DiffPure's "
                                                        "DDPM variant takes every timestep: t* x 1000)")
        diffusion_size: tuple[int, int] = Field((32, 16), description="(height, width) the diffusion UNet works "
                                                                      "at; images are resized to it and back")
        diffusion_channels: tuple[int, ...] = Field((32, 64, 64), description="UNet block widths")
        diffusion_steps: int = Field(1200, ge=1, description="diffusion training steps")
        diffusion_batch: int = Field(32, ge=1, description="diffusion training batch size")
        diffusion_lr: float = Field(1e-3, gt=0, description="diffusion AdamW learning rate")
        diffusion_seed: int = Field(0, description="seed of the generator's training (shared by all cells)")

    # the generator's sizes and budgets are dddefense's, so the two read alike
    presets: ClassVar = {
        "smoke": {"diffusion_size": (16, 8), "diffusion_channels": (16, 32), "diffusion_steps": 10,
                  "denoise_steps": 2},
        "paper": {"diffusion_size": (128, 64), "diffusion_channels": (64, 128, 256, 256),
                  "diffusion_steps": 100_000, "diffusion_batch": 64, "diffusion_lr": 2e-4, "denoise_steps": 20},
    }

    def attacker_gradient(self) -> str:
        return attacker_gradient(True, self.params.bpda)

    def purifier(self, train, data_key, ctx):
        from benchbench_testtime.diffpure import purifier

        return purifier(self, train, data_key, ctx)


@benchbench.hookimpl
def benchbench_defenses():
    return [ClipJpeg, ClipMedian, ReidJpeg, ReidMedian, DiffPure]
