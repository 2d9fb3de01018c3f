"""ReID models from torchreid's factory, taking images in [0, 1].

torchreid's networks expect ImageNet-normalised input, while attacks bound their
perturbation in pixel space. ``ReidNet`` puts the normalisation inside the model, so
an attack, a defense and the evaluation all handle plain [0, 1] images and an epsilon
of 8/255 means 8 grey levels. In eval mode the model returns the embedding before the
classifier (torchreid's ``v``); in train mode it returns ``(logits, embedding)``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from benchbench.errors import ConfigError, DataError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torchreid warns that its Cython ranker is missing
    from torchreid.reid import models as torchreid_models

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ReidNet(nn.Module):
    def __init__(self, backbone: nn.Module, arch: str, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.arch, self.num_classes = arch, num_classes
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor):
        """[0, 1] images -> embedding (eval) or ``(logits, embedding)`` (train)."""
        return self.backbone((images - self.mean) / self.std)


def available_archs() -> list[str]:
    return sorted(torchreid_models.__model_factory)


def build_model(arch: str, num_classes: int, weights: str | Path | None = None) -> ReidNet:
    """A torchreid architecture (``osnet_x0_25``, ``resnet18``, ``resnet50``, ...) from
    scratch, or initialised from a local checkpoint (never downloaded)."""
    if arch not in torchreid_models.__model_factory:
        from difflib import get_close_matches

        hint = get_close_matches(arch, available_archs(), n=3)
        raise ConfigError(f"unknown torchreid architecture '{arch}'"
                        + (f" (did you mean {', '.join(hint)}?)" if hint else ""))
    backbone = torchreid_models.build_model(arch, num_classes, loss="triplet", pretrained=False, use_gpu=False)
    if weights:
        load_matching_weights(backbone, weights)
    return ReidNet(backbone, arch, num_classes)


def load_matching_weights(module: nn.Module, path: str | Path) -> list[str]:
    """Load the tensors whose name and shape match, like torchreid's
    ``load_pretrained_weights`` (a re-sized classifier is skipped), but with
    ``weights_only=True`` (or safetensors) so a checkpoint cannot run code. Returns the
    loaded names."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"weights file {path} not found (give a local .pth/.safetensors checkpoint)")
    try:
        state = load_file(str(path)) if path.suffix == ".safetensors" else \
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader error is a bad file
        raise DataError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from None
    state = state.get("state_dict", state)
    own = module.state_dict()
    matched = {k.removeprefix("module."): v for k, v in state.items()
               if k.removeprefix("module.") in own and own[k.removeprefix("module.")].shape == v.shape}
    if not matched:
        raise DataError(f"{path}: no tensor matches the architecture's names and shapes")
    module.load_state_dict({**own, **matched})
    return sorted(matched)


def save_model(model: ReidNet, directory: Path) -> None:
    """``model.safetensors`` + ``model.json`` (architecture and class count)."""
    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()},
              str(directory / "model.safetensors"))
    (directory / "model.json").write_text(json.dumps({"arch": model.arch, "num_classes": model.num_classes}))


def load_model(directory: Path) -> ReidNet:
    meta = json.loads((directory / "model.json").read_text())
    model = build_model(meta["arch"], meta["num_classes"])
    model.backbone.load_state_dict(load_file(str(directory / "model.safetensors")))
    return model.eval()


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Embeddings of uint8 or [0, 1] float images, in eval mode, in batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for chunk in images.split(batch_size):
        x = chunk.float().div(255) if chunk.dtype == torch.uint8 else chunk
        out.append(model(x.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out)
