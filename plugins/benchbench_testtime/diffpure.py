"""DiffPure for ReID queries and gallery: diffuse each image to time t*, then denoise it
back with the track's diffusion generator.

Reference: Nie, Guo, Huang, Xiao, Vahdat & Anandkumar, "Diffusion Models for Adversarial
Purification", ICML 2022; code github.com/NVlabs/DiffPure, whose DDPM variant
(``runners/diffpure_ddpm.py``) noises an image in closed form to timestep t* and runs
the ancestral DDPM steps from t* back to 0. Here:

- the score model is ``benchbench.reid.diffusion``'s UNet (the one DDDefense generates
  with), trained unconditionally on the task's training images: one identity and one
  camera, identity dropped on every step (``drop_identity = 1``: zero identity vector,
  zero reference), so purification needs no label. It is a stage of the data
  (``reid-purifier-generator``), trained once and shared by every seed and attack;
- forward diffusion is ``DDPMScheduler.add_noise`` at t* = ``t_star`` x 1000 on the
  generator's cosine schedule, and the reverse process is ``DDPMScheduler.step`` on
  ``denoise_steps`` evenly spaced timesteps from t* (respaced ancestral sampling; DiffPure
  takes every timestep, which a CPU attack loop cannot afford);
- the UNet works at ``diffusion_size``: images are resized to it and the purified ones
  back to the data's size, so purified images are softer than the inputs (as
  DDDefense's samples are);
- noise is drawn from a generator seeded by the cell's seed, fresh on every call (the
  attack's iterations each see a new draw, as DiffPure's attacker does without EOT).

The whole chain is differentiable: with ``bpda`` false an attack back-propagates through
every denoising step (DiffPure's "full gradient" threat model, computed directly instead
of with its adjoint solver); with ``bpda`` true the backward pass is the identity.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from torchvision.transforms.v2 import functional as TF

from benchbench.purify import Purifier
from benchbench.reid import diffusion
from benchbench.reid.data import ImageSet
from benchbench.stages import StageCache


class DiffusionPurifier(Purifier):
    """Noise [0, 1] images to timestep ``timesteps[0]``, then DDPM steps down ``timesteps``."""

    def __init__(self, model: diffusion.ConditionalUNet, timesteps: list[int], seed: int, bpda: bool = False):
        super().__init__(bpda)
        self.model = model
        self.scheduler = DDPMScheduler(**diffusion.SCHEDULE)
        self.scheduler.set_timesteps(timesteps=timesteps)
        self.generator = torch.Generator().manual_seed(seed)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        size, out_size = tuple(self.model.unet.config.sample_size), tuple(x.shape[-2:])
        z = diffusion.to_model_space(x * 255, size)  # the generator's [-1, 1] space
        label = torch.zeros(len(z), dtype=torch.int64, device=z.device)
        reference, drop = torch.zeros_like(z), torch.zeros(len(z), dtype=torch.bool, device=z.device)
        t_star = self.scheduler.timesteps[0]
        noise = torch.randn(z.shape, generator=self.generator).to(z.device)
        z = self.scheduler.add_noise(z, noise, t_star.expand(len(z)))
        for t in self.scheduler.timesteps:
            eps = self.model(z, t.expand(len(z)).to(z.device), label, label, reference, drop)
            z = self.scheduler.step(eps, t, z, generator=self.generator).prev_sample
        out = z.clamp(-1, 1).add(1).div(2)
        if out_size != size:
            out = TF.resize(out, list(out_size), antialias=True)
        return out.clamp(0, 1)


def timesteps(t_star: float, steps: int, num_train_timesteps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from t* down (descending, distinct, all > 0)."""
    top = max(1, round(t_star * num_train_timesteps))
    grid = torch.linspace(top, 0, steps + 1)[:-1].round().long().tolist()
    return sorted({t for t in grid if t > 0}, reverse=True)


def generator_stage(defense, train: ImageSet, data_key: str, cache: StageCache, show_progress: bool = True) -> Path:
    """The unconditional generator of the training images (``unet/``, ``condition.safetensors``,
    ``diffusion.json``, ``train_log.json``), trained once per data set and config."""
    p = defense.params
    config = diffusion.DiffusionConfig(size=tuple(p.diffusion_size), channels=tuple(p.diffusion_channels),
                                       train_steps=p.diffusion_steps, batch_size=p.diffusion_batch,
                                       lr=p.diffusion_lr, drop_identity=1.0)
    diffusion.check_size(config.size, config.channels, "diffpure")

    def build(out: Path) -> None:
        one = torch.zeros(len(train.pids), dtype=torch.int64)  # one identity, one camera
        model, losses = diffusion.train_diffusion(train.images, one, one, 1, 1, config, p.diffusion_seed,
                                                  show_progress=show_progress)
        diffusion.save(model, out)
        (out / "train_log.json").write_text(json.dumps(diffusion.train_log(config, losses), indent=1))

    parts = {"data": data_key, "size": list(train.images.shape[-2:]), "config": diffusion.config_dict(config),
             "seed": p.diffusion_seed, "version": defense.version}
    return cache.get_or_build("reid-purifier-generator", parts, build).path


def purifier(defense, train: ImageSet, data_key: str, ctx) -> DiffusionPurifier:
    """The cell's purifier: the cached generator, t*'s timesteps, noise seeded by the cell."""
    p = defense.params
    model = diffusion.load(generator_stage(defense, train, data_key, ctx.cache, ctx.progress)).to(ctx.device)
    steps = timesteps(p.t_star, p.denoise_steps, diffusion.SCHEDULE["num_train_timesteps"])
    return DiffusionPurifier(model, steps, ctx.seed, bpda=p.bpda)
