"""open_clip models for the CLIP track: tiny CPU configs and any open_clip name.

The tiny configs in ``model_configs/`` are registered with open_clip's own model
registry (``open_clip.add_model_config``), so ``open_clip.create_model("bb-tiny-vit")``
works like any built-in name and a real run only changes the name (plus a local
``pretrained=PATH`` checkpoint: nothing is downloaded at run time).

``ClipModel`` bundles the network with its tokenizer and preprocessing so the trainer,
the defenses and the evaluators share one way to turn uint8 images and caption strings
into embeddings. ``ClipModel.encode(..., with_tokens=True)`` also returns the
fine-grained features token-level defenses (OTCCLIP) match on: the ViT's patch tokens and
the text transformer's word tokens, both after the towers' final norm and projected into
the joint embedding space (the same path the global features take), plus the mask of
real word positions (no start/end/padding tokens).
"""
from __future__ import annotations

import functools
import json
import logging
import math
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch
from safetensors.torch import load_file, save_file

from benchbench import distributed
from benchbench.errors import ConfigError, DataError

CONFIG_DIR = Path(__file__).with_name("model_configs")
open_clip.add_model_config(CONFIG_DIR)
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the temperature so logits stay <= 100
WEIGHTS, SPEC = "model.safetensors", "model.json"


@dataclass(frozen=True)
class ModelSpec:
    """What builds the network (hashed into the model stage key)."""

    name: str = "bb-tiny-vit"
    pretrained: str | None = None  # a local checkpoint file; None = random init
    image_size: int | None = None  # None = the config's
    context_length: int | None = None  # None = the config's


def input_size(spec: ModelSpec) -> int:
    """The square image side the model takes (what the data is resized to)."""
    if spec.image_size is not None:
        return spec.image_size
    config = open_clip.get_model_config(spec.name)
    if config is None:
        raise ConfigError(f"unknown open_clip model '{spec.name}'; see open_clip.list_models()")
    size = config["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[0])


@dataclass
class Features:
    """One forward pass. ``image``/``text`` are L2-normalised global embeddings."""

    image: torch.Tensor  # (B, D)
    text: torch.Tensor  # (B, D)
    logit_scale: torch.Tensor  # scalar: exp(learnable log temperature), <= 100
    image_tokens: torch.Tensor | None = None  # (B, P, D) patch tokens, projected, not normalised
    text_tokens: torch.Tensor | None = None  # (B, L, D) word tokens, projected, not normalised
    text_mask: torch.Tensor | None = None  # (B, L) True at real word positions


def _project(x: torch.Tensor, proj: torch.nn.Module | torch.Tensor | None) -> torch.Tensor:
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Module) else x @ proj


class ClipModel:
    """An open_clip network plus its tokenizer and input normalisation."""

    def __init__(self, spec: ModelSpec, net: torch.nn.Module, device: str = "cpu"):
        self.spec, self.net, self.device = spec, net.to(device), device
        self.tokenizer = open_clip.get_tokenizer(spec.name, context_length=spec.context_length)
        cfg = net.visual.preprocess_cfg
        self.mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)
        self.image_size = input_size(spec)
        self._special = torch.tensor(sorted({0, *getattr(self.tokenizer, "all_special_ids", [])}))
        # a test-time defense's purifier (benchbench.purify), set by the task on the model it
        # evaluates: every image encoded goes through it, [0, 1] floats in and out
        self.purifier: torch.nn.Module | None = None

    @classmethod
    def create(cls, spec: ModelSpec, seed: int, device: str = "cpu") -> "ClipModel":
        """Build the network; random init is seeded so training is reproducible."""
        if spec.name not in open_clip.list_models():
            raise ConfigError(f"unknown open_clip model '{spec.name}'; choose one of open_clip.list_models() "
                              f"(tiny CPU configs: {', '.join(p.stem for p in CONFIG_DIR.glob('*.json'))})")
        if spec.pretrained is not None and not Path(spec.pretrained).is_file():
            raise ConfigError(f"pretrained checkpoint '{spec.pretrained}' is not a file; give a local path "
                              "(benchbench never downloads weights)")
        torch.manual_seed(seed)
        return cls(spec, _build(spec, spec.pretrained, device), device)

    # -- inputs ------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) at ``image_size`` -> normalised float on the model's device,
        through the purifier if one is set."""
        x = images.to(self.device).float() / 255.0
        if self.purifier is not None:
            x = self.purifier(x)
        return (x - self.mean) / self.std

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(list(captions))

    def word_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """True where a token is a word (not start, end or padding)."""
        return ~torch.isin(tokens, self._special.to(tokens.device))

    # -- forward -----------------------------------------------------------------------
    def encode(self, images: torch.Tensor, tokens: torch.Tensor, with_tokens: bool = False) -> Features:
        """Forward a batch of uint8 images and token ids (with gradients if enabled)."""
        x, tokens = self.preprocess(images), tokens.to(self.device)
        scale = self.net.logit_scale.exp()
        if not with_tokens:
            return Features(self.net.encode_image(x, normalize=True),
                            self.net.encode_text(tokens, normalize=True), scale)
        if not hasattr(self.net.visual, "proj"):
            raise ConfigError(f"model '{self.spec.name}' has no ViT patch tokens; token-level defenses need a ViT")
        out = self.net.forward_intermediates(image=x, text=tokens, image_indices=1, text_indices=1,
                                             normalize_intermediates=True, image_output_fmt="NLC")
        text_proj = getattr(self.net, "text_projection", None)
        if text_proj is None and hasattr(self.net, "text"):  # CustomTextCLIP keeps the text tower apart
            text_proj = self.net.text.text_projection
        return Features(out["image_features"], out["text_features"], scale,
                        image_tokens=_project(out["image_intermediates"][-1], self.net.visual.proj),
                        text_tokens=_project(out["text_intermediates"][-1], text_proj),
                        text_mask=self.word_mask(tokens))

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Normalised embeddings of uint8 images, in eval mode (restores the mode after)."""
        with _eval_mode(self.net):
            return torch.cat([self.net.encode_image(self.preprocess(images[i:i + batch_size]), normalize=True)
                              for i in range(0, len(images), batch_size)]).cpu()

    @torch.no_grad()
    def encode_texts(self, captions: list[str] | torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Normalised embeddings of captions (strings or token ids), in eval mode."""
        tokens = captions if isinstance(captions, torch.Tensor) else self.tokenize(captions)
        with _eval_mode(self.net):
            return torch.cat([self.net.encode_text(tokens[i:i + batch_size].to(self.device), normalize=True)
                              for i in range(0, len(tokens), batch_size)]).cpu()

    def clamp_logit_scale(self) -> None:
        with torch.no_grad():
            self.net.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    # -- artifacts ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(directory / WEIGHTS))
        (directory / SPEC).write_text(json.dumps(asdict(self.spec), indent=1))

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "ClipModel":
        directory = Path(directory)
        spec = ModelSpec(**json.loads((directory / SPEC).read_text()))
        net = _build(spec, None, device)
        net.load_state_dict(load_file(str(directory / WEIGHTS), device=device))
        return cls(spec, net, device)


def _build(spec: ModelSpec, pretrained: str | None, device: str) -> torch.nn.Module:
    """``open_clip.create_model``; random init is intended here, so its warning is muted.

    open_clip loads a ``.pt``/``.bin`` checkpoint with ``torch.load(weights_only=True)``.
    A checkpoint that pickles Python objects fails there with torch's advice to pass
    ``weights_only=False``, which would run the file's code: benchbench never unpickles,
    so the error says how to convert the file instead.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING if pretrained is None else previous)
    try:
        return open_clip.create_model(spec.name, pretrained=pretrained, force_image_size=spec.image_size,
                                      force_context_length=spec.context_length, device=device)
    except pickle.UnpicklingError:
        raise DataError(f"pretrained checkpoint {pretrained} cannot be read as plain tensors (it pickles "
                        f"Python objects, which benchbench never loads, or is not a checkpoint): save its "
                        f"state_dict with safetensors.torch.save_file and pass the .safetensors path") from None
    finally:
        logging.disable(previous)


class _eval_mode:
    """Context manager: eval mode inside, the previous mode after."""

    def __init__(self, net: torch.nn.Module):
        self.net, self.was_training = net, net.training

    def __enter__(self) -> None:
        self.net.eval()

    def __exit__(self, *exc) -> None:
        self.net.train(self.was_training)


@functools.cache
def _clip_loss(rank: int, world_size: int) -> open_clip.ClipLoss:
    if world_size == 1:
        return open_clip.ClipLoss()
    return open_clip.ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world_size)


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned normalised embeddings (open_clip's ``ClipLoss``).

    ``contrastive_loss(f.image, f.text, f.logit_scale)`` is CLIP's loss; the same call on
    two views of one modality is CleanCLIP's in-modal loss.

    On several processes (``benchbench.distributed``) the rows are this rank's slice of
    the global batch and the negatives are every rank's rows: open_clip's distributed
    ``ClipLoss`` gathers them with gradients (``gather_with_grad``) and, with
    ``local_loss``, scores this rank's rows against all of them. The mean of the ranks'
    losses is then the one-process loss of the global batch, and the mean of their
    gradients its gradient (the trainer averages them). Being a collective there, it must
    be called on every rank, as the trainer's loss hook is.
    """
    return _clip_loss(distributed.rank(), distributed.world_size())(a, b, logit_scale)
