"""The teacher's decoder: embedding -> image, for MID's cyclic (pixel-level) consistency.

MID's teacher is an autoencoder trained once on clean data with cross-entropy plus a
reconstruction loss (the released ``Training_MNIST.py``: a LeNet encoder, a decoder that
un-pools with the encoder's max-pool indices, a classifier head; MSE reconstruction).
On the ReID track the teacher is the plain model of the same data and seed (the ``none``
cell's, shared with the grid), so only the decoder is new: it is trained here on that
model's frozen clean embeddings with the MSE reconstruction loss and cached as a stage
per teacher. A ReID embedding is pooled, so the decoder starts from a vector (a linear
map to a coarse grid, then 2x transposed convolutions) rather than from un-pooling
indices: our design, the pooled embedding being all the track's models expose.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from benchbench.numerics import isolated_rng, require_finite
from benchbench.reid.models import extract_features, load_model
from benchbench.stages import Stage, StageCache


class FeatureDecoder(nn.Module):
    """(N, dim) embeddings -> (N, 3, H, W) images in [0, 1]: a linear map to a
    ``channels[0]`` x (H / 2^k) x (W / 2^k) grid, then k = len(channels) transposed
    convolutions that each double the size (the last one to RGB), cropped to (H, W)."""

    def __init__(self, dim: int, size: tuple[int, int], channels: tuple[int, ...] = (128, 64, 32)):
        super().__init__()
        self.dim, self.size, self.channels = dim, tuple(size), tuple(channels)
        scale = 2 ** len(channels)
        self.grid = (math.ceil(size[0] / scale), math.ceil(size[1] / scale))
        self.fc = nn.Linear(dim, channels[0] * self.grid[0] * self.grid[1])
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(channels[-1], 3, 4, 2, 1), nn.Sigmoid()]
        self.up = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(features)).view(len(features), self.channels[0], *self.grid)
        return self.up(x)[..., :self.size[0], :self.size[1]]


def train_decoder(teacher: nn.Module, images: torch.Tensor, channels: tuple[int, ...], steps: int,
                  batch_size: int, lr: float, seed: int) -> tuple[FeatureDecoder, list[float]]:
    """A decoder fitted by Adam to reconstruct uint8 ``images`` from ``teacher``'s clean
    embeddings of them (MSE in [0, 1] pixels); returns it in eval mode and the step losses."""
    features = extract_features(teacher, images)
    targets = images.float().div(255)
    with isolated_rng(seed):
        decoder = FeatureDecoder(features.shape[1], tuple(images.shape[-2:]), channels).train()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        index = torch.randint(len(features), (min(batch_size, len(features)),), generator=generator)
        loss = F.mse_loss(decoder(features[index]), targets[index])
        require_finite(loss.detach(), f"MID decoder loss at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return decoder.eval(), losses


def decoder_stage(params, version: str, teacher: Stage, images: torch.Tensor, cache: StageCache,
                  seed: int) -> Stage:
    """The decoder of ``teacher`` (a model stage) trained on ``images``, built once per teacher
    and decoder params: ``decoder.safetensors``, ``decoder.json``, ``train_log.json``."""
    channels = tuple(params.decoder_channels)

    def build(out: Path) -> None:
        decoder, losses = train_decoder(load_model(teacher.path), images, channels, params.decoder_steps,
                                        params.decoder_batch, params.decoder_lr, seed)
        save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(out / "decoder.safetensors"))
        (out / "decoder.json").write_text(json.dumps({"dim": decoder.dim, "size": list(decoder.size),
                                                      "channels": list(channels)}))
        (out / "train_log.json").write_text(json.dumps(
            {"mse_per_100_steps": [round(sum(losses[i:i + 100]) / len(losses[i:i + 100]), 5)
                                   for i in range(0, len(losses), 100)]}, indent=1))

    parts = {"teacher": teacher.key, "size": list(images.shape[-2:]), "images": len(images),
             "channels": list(channels), "steps": params.decoder_steps, "batch": params.decoder_batch,
             "lr": params.decoder_lr, "seed": seed, "version": version}
    return cache.get_or_build("mid-decoder", parts, build)


def load_decoder(directory: Path) -> FeatureDecoder:
    meta = json.loads((directory / "decoder.json").read_text())
    decoder = FeatureDecoder(meta["dim"], tuple(meta["size"]), tuple(meta["channels"]))
    decoder.load_state_dict(load_file(str(directory / "decoder.safetensors")))
    return decoder.eval()
