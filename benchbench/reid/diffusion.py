"""The ReID track's diffusion generator: an identity- and camera-conditioned diffusion
model, made for DDDefense's balancing phase and shared with the test-time purifier
(``benchbench_testtime``), which trains it unconditionally (one identity, one camera,
identity always dropped).

The generator must draw person *i* as seen by camera *c*, also when *i* was never seen
by *c* (exactly what intra-identity balancing asks for). A class index per
(identity, camera) pair would leave those pairs untrained, so the condition is
factorised and composes for unseen pairs:

- ``id_embedding[i] + cam_embedding[c]`` is the class vector of a
  ``diffusers.UNet2DModel`` (``class_embed_type="identity"``: added to the timestep
  embedding, which modulates every ResNet block by scale and shift);
- a *reference* image of identity i (another of its training images, any camera) is
  concatenated to the noisy input as three more channels. On CPU budgets an identity
  embedding learnt from ~10 images does not carry a person's clothes (we tried: the
  camera was rendered, the person was not); the reference does, and the model learns
  to redraw that person in a new pose and in camera c's look.

Classifier-free guidance (Ho & Salimans 2022) on the identity: training drops the
identity (embedding and reference) for a share of images, sampling moves the
camera-only prediction ``guidance`` times along the identity's direction.

Training uses ``DDPMScheduler``'s noise schedule (epsilon prediction, MSE) with an EMA
of the weights (``diffusers.training_utils.EMAModel``); sampling uses ``DDIMScheduler``
(eta 0) with few steps. On CPU the UNet works at a reduced resolution (``size``) and
samples are resized to the data's size: softer images than the real ones.

Artifacts are diffusers' own format (``unet/`` via ``save_pretrained``, safetensors)
plus ``condition.safetensors`` and ``diffusion.json``; ``load`` reads the same format,
so a generator trained elsewhere (e.g. on a GPU at the paper preset) can be given to
the defense by path.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.transforms.v2 import functional as TF

from benchbench.numerics import isolated_rng
from benchbench.errors import ConfigError, DataError
from benchbench.progress import progress

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}


@dataclass(frozen=True)
class DiffusionConfig:
    """Size and training budget of the generator (the defense's diffusion params)."""

    size: tuple[int, int] = (32, 16)  # (height, width) the UNet works at
    channels: tuple[int, ...] = (32, 64, 64)
    train_steps: int = 1200
    batch_size: int = 32
    lr: float = 1e-3
    ema_decay: float = 0.995
    drop_identity: float = 0.15  # share of training images seen without identity, for guidance


class ConditionalUNet(nn.Module):
    """``UNet2DModel`` on [noisy image, reference image] conditioned on
    ``id_embedding[pid] + cam_embedding[camid]``."""

    def __init__(self, num_ids: int, num_cams: int, size: tuple[int, int], channels: tuple[int, ...]):
        super().__init__()
        n = len(channels)
        self.unet = UNet2DModel(
            sample_size=tuple(size), in_channels=6, out_channels=3, block_out_channels=tuple(channels),
            layers_per_block=1, down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
            norm_num_groups=min(8, channels[0]), class_embed_type="identity",
            resnet_time_scale_shift="scale_shift")
        dim = channels[0] * 4  # UNet2DModel's timestep-embedding width
        self.id_embedding = nn.Embedding(num_ids, dim)
        self.cam_embedding = nn.Embedding(num_cams, dim)

    @property
    def num_ids(self) -> int:
        return self.id_embedding.num_embeddings

    @property
    def num_cams(self) -> int:
        return self.cam_embedding.num_embeddings

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, pids: torch.Tensor, camids: torch.Tensor,
                reference: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise. Rows where ``keep`` is False drop the identity (zero identity
        vector, zero reference) and keep the camera."""
        identity = self.id_embedding(pids)
        if keep is not None:
            identity = identity * keep[:, None].to(identity.dtype)
            reference = reference * keep[:, None, None, None].to(reference.dtype)
        x = torch.cat([noisy, reference], dim=1)
        return self.unet(x, t, class_labels=identity + self.cam_embedding(camids)).sample

    def guided(self, noisy: torch.Tensor, t: torch.Tensor, pids: torch.Tensor, camids: torch.Tensor,
               reference: torch.Tensor, scale: float) -> torch.Tensor:
        """Classifier-free guidance on the identity: camera-only prediction moved
        ``scale`` times along the identity's direction (``scale`` 1: no guidance)."""
        if scale == 1.0:
            return self(noisy, t, pids, camids, reference)
        keep = torch.arange(2 * len(pids)) < len(pids)
        twice = lambda x: torch.cat([x, x])  # noqa: E731
        cond, uncond = self(twice(noisy), twice(t), twice(pids), twice(camids), twice(reference), keep).chunk(2)
        return uncond + scale * (cond - uncond)


def check_size(size: tuple[int, int], channels: tuple[int, ...], who: str) -> None:
    """Refuse a UNet size its down-sampling cannot halve ``len(channels) - 1`` times."""
    levels = 2 ** (len(channels) - 1)
    if size[0] % levels or size[1] % levels:
        raise ConfigError(f"{who}: diffusion_size {list(size)} must be divisible by {levels} "
                          f"(2 ** (len(diffusion_channels) - 1)) for the UNet's down-sampling")


def references(pids: torch.Tensor, wanted: torch.Tensor, generator: torch.Generator,
               exclude: torch.Tensor | None = None) -> torch.Tensor:
    """For each identity in ``wanted``, the index of a random image of it in ``pids``;
    ``exclude[k]`` (an index) is avoided when the identity has another image."""
    out = torch.empty(len(wanted), dtype=torch.int64)
    by_id = {int(p): torch.nonzero(pids == p).flatten() for p in wanted.unique()}
    for k, p in enumerate(wanted.tolist()):
        pool = by_id[p]
        if exclude is not None and len(pool) > 1:
            pool = pool[pool != exclude[k]]
        out[k] = pool[torch.randint(len(pool), (1,), generator=generator)]
    return out


def train_diffusion(images: torch.Tensor, pids: torch.Tensor, camids: torch.Tensor, num_ids: int,
                    num_cams: int, config: DiffusionConfig, seed: int,
                    show_progress: bool = True) -> tuple[ConditionalUNet, list[float]]:
    """Fit the generator on uint8 images (N, 3, H, W) with training labels and 0-based
    cameras; return the EMA model and the loss of every step. Each target image is
    drawn uniformly and paired with another image of its identity as reference; both
    are flipped at random, independently."""
    gen = torch.Generator().manual_seed(seed)
    # diffusers initialises from the global RNG: seed it in a fork, so that training a
    # generator (or finding it cached) leaves the caller's RNG, e.g. the ReID
    # trainer's, as it was
    with isolated_rng(seed):
        model = ConditionalUNet(num_ids, num_cams, config.size, config.channels).train()
    ema = EMAModel(model.parameters(), decay=config.ema_decay)
    scheduler = DDPMScheduler(**SCHEDULE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 100))
    data = to_model_space(images, config.size)

    def flipped(x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(len(x), generator=gen) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    losses = []
    for _ in progress(range(config.train_steps), "train dddefense generator", enabled=show_progress):
        index = torch.randint(len(data), (config.batch_size,), generator=gen)
        x0 = flipped(data[index])
        ref = flipped(data[references(pids, pids[index], gen, exclude=index)])
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(scheduler.config.num_train_timesteps, (len(index),), generator=gen)
        keep = torch.rand(len(index), generator=gen) >= config.drop_identity
        pred = model(scheduler.add_noise(x0, noise, t), t, pids[index], camids[index], ref, keep)
        loss = nn.functional.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        warmup.step()
        ema.step(model.parameters())
        losses.append(float(loss.detach()))
    ema.copy_to(model.parameters())
    return model.eval(), losses


@torch.no_grad()
def sample(model: ConditionalUNet, pids: torch.Tensor, camids: torch.Tensor, train_images: torch.Tensor,
           train_pids: torch.Tensor, sampling_steps: int, seed: int, guidance: float = 1.0,
           batch_size: int = 128) -> torch.Tensor:
    """uint8 images of identity ``pids[k]`` seen by camera ``camids[k]``, at the size of
    ``train_images`` (whose images of each identity serve as references). Deterministic
    for a seed: DDIM with eta 0 from seeded noise and seeded reference choices."""
    scheduler = DDIMScheduler(**SCHEDULE)
    scheduler.set_timesteps(sampling_steps)
    gen = torch.Generator().manual_seed(seed)
    size = tuple(model.unet.config.sample_size)
    out_size = tuple(train_images.shape[-2:])
    refs = to_model_space(train_images[references(train_pids, pids, gen)], size) if len(pids) else None
    out = []
    for start in range(0, len(pids), batch_size):
        p, c = pids[start:start + batch_size], camids[start:start + batch_size]
        ref = refs[start:start + batch_size]
        x = torch.randn((len(p), 3, *size), generator=gen)
        for t in scheduler.timesteps:
            x = scheduler.step(model.guided(x, t.expand(len(p)), p, c, ref, guidance), t, x).prev_sample
        out.append(from_model_space(x, out_size))
    return torch.cat(out) if out else torch.empty(0, 3, *out_size, dtype=torch.uint8)


def to_model_space(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 images -> floats in [-1, 1] at the model's resolution."""
    x = images.float().div(127.5).sub(1)
    return TF.resize(x, list(size), antialias=True) if tuple(x.shape[-2:]) != tuple(size) else x


def from_model_space(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Model-space floats -> uint8 images at ``size``."""
    x = x.clamp(-1, 1).add(1).mul(127.5)
    if tuple(x.shape[-2:]) != tuple(size):
        x = TF.resize(x, list(size), antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def save(model: ConditionalUNet, directory: Path) -> None:
    """diffusers' ``unet/`` (safetensors) + the condition embeddings + sizes."""
    model.unet.save_pretrained(directory / "unet", safe_serialization=True)
    save_file({"id_embedding": model.id_embedding.weight.detach().contiguous(),
               "cam_embedding": model.cam_embedding.weight.detach().contiguous()},
              str(directory / "condition.safetensors"))
    (directory / "diffusion.json").write_text(json.dumps(
        {"num_ids": model.num_ids, "num_cams": model.num_cams,
         "size": list(model.unet.config.sample_size), "channels": list(model.unet.config.block_out_channels)}))


def load(directory: str | Path) -> ConditionalUNet:
    """A generator saved by ``save`` (local files only; nothing is downloaded)."""
    directory = Path(directory).expanduser()
    meta_path = directory / "diffusion.json"
    if not meta_path.is_file():
        raise DataError(f"{directory} is not a saved dddefense generator (no diffusion.json); give a "
                        f"folder written by benchbench.reid.diffusion.save, or leave diffusion_path unset")
    meta = json.loads(meta_path.read_text())
    model = ConditionalUNet(meta["num_ids"], meta["num_cams"], tuple(meta["size"]), tuple(meta["channels"]))
    model.unet = UNet2DModel.from_pretrained(str(directory / "unet"), local_files_only=True,
                                             low_cpu_mem_usage=False)  # plain torch load: no accelerate
    embeddings = load_file(str(directory / "condition.safetensors"))
    model.id_embedding.weight.data.copy_(embeddings["id_embedding"])
    model.cam_embedding.weight.data.copy_(embeddings["cam_embedding"])
    return model.eval()


def train_log(config: DiffusionConfig, losses: list[float]) -> dict:
    """What a generator stage's ``train_log.json`` holds: the config and the mean loss of
    every 100 steps."""
    return {"config": config_dict(config),
            "loss_per_100_steps": [round(sum(losses[i:i + 100]) / len(losses[i:i + 100]), 5)
                                   for i in range(0, len(losses), 100)]}


def config_dict(config: DiffusionConfig) -> dict:
    """JSON-able form of ``config`` for stage keys and logs."""
    return json.loads(json.dumps(asdict(config)))
