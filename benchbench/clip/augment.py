"""Image and caption augmentations shared by the CLIP defenses.

RoCLIP and SafeCLIP train on augmented views (the SimCLR recipe in RoCLIP's
``utils/augment_image.py``: flip, random resized crop, colour jitter, grayscale, blur);
CleanCLIP's in-modal loss contrasts each image with an AutoAugment view
(``torchvision.transforms.AutoAugment``, as in CyCLIP's ``utils/augment_image.py``).
All three augment captions with EDA (Wei & Zou 2019, the ``eda.py`` CyCLIP ships).

Images are the kit's uint8 (B, 3, S, S) batches; the torchvision v2 transforms work on
them directly. A v2 transform given a batch draws one set of random parameters for the
whole batch, so views are made per *group* of ``group`` images: 1 is the papers'
per-image augmentation; larger groups share a draw and are several times faster on a
CPU (per-image calls cost ~2 ms each at 32 px, the fixed overhead of each op).

EDA's synonym replacement and random insertion look words up in WordNet, which is not
available offline here; pass ``synonyms`` (word -> alternatives) to enable them.
Without it EDA uses random swap and random deletion only.
"""
from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torchvision.transforms import v2

from benchbench.api import Params

if TYPE_CHECKING:
    from benchbench.clip.trainer import Batch, TrainState

ImageAugmentation = Literal["simclr", "autoaugment", "none"]

#: RoCLIP's blur kernel is 21 px on 224 px images; we keep the same fraction of the image.
_BLUR_FRACTION = 21 / 224


def image_augmentation(kind: ImageAugmentation, image_size: int) -> v2.Transform:
    """The augmentation ``kind`` for uint8 images of side ``image_size``."""
    if kind == "none":
        return v2.Identity()
    if kind == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
    if kind == "simclr":
        kernel = max(3, int(round(_BLUR_FRACTION * image_size)) | 1)  # odd, >= 3
        scale = image_size / 224  # torchvision's default blur sigma range is for 224 px
        return v2.Compose([
            v2.RandomHorizontalFlip(),
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomApply([v2.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.GaussianBlur(kernel, sigma=(0.1 * scale, 2.0 * scale)),
        ])
    raise ValueError(f"unknown image augmentation {kind!r}; choose 'simclr', 'autoaugment' or 'none'")


def augment_images(images: torch.Tensor, transform: v2.Transform, group: int = 1) -> torch.Tensor:
    """One augmented view of each image of a uint8 (B, 3, S, S) batch; images in
    consecutive groups of ``group`` share one draw of the random parameters."""
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    return torch.cat([transform(chunk) for chunk in images.split(group)])


# -- EDA ------------------------------------------------------------------------------
_NOT_LETTERS = re.compile(r"[^a-z ]+")
#: English function words (EDA's list, NLTK's): EDA never replaces them; OTCCLIP's content marginals mask them.
STOP_WORDS = frozenset(
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her "
    "hers herself it its itself they them their theirs themselves what which who whom this that these those "
    "am is are was were be been being have has had having do does did doing a an the and but if or because "
    "as until while of at by for with about against between into through during before after above below to "
    "from up down in out on off over under again further then once here there when where why how all any "
    "both each few more most other some such no nor not only own same so than too very s t can will just "
    "don should now".split()
)


def _words(caption: str) -> list[str]:
    """EDA's cleaning: lower case, letters and spaces only, split on spaces."""
    text = caption.lower().replace("'", "").replace("’", "").replace("-", " ")
    return _NOT_LETTERS.sub(" ", text).split()


def eda(caption: str, rng: random.Random, alpha_sr: float = 0.1, alpha_ri: float = 0.1,
        alpha_rs: float = 0.1, p_rd: float = 0.1,
        synonyms: Mapping[str, Sequence[str]] | None = None) -> str:
    """One EDA view of ``caption``: a single technique drawn at random among synonym
    replacement (sr), random insertion (ri), random swap (rs) and random deletion (rd),
    as ``eda(caption)[0]`` in CyCLIP/CleanCLIP/RoCLIP (``num_aug=1``). sr and ri need
    ``synonyms``; a technique whose rate is 0 is never drawn."""
    words = _words(caption)
    if not words:
        return caption
    n_words = len(words)
    techniques = [t for t, on in (("sr", alpha_sr > 0 and synonyms), ("ri", alpha_ri > 0 and synonyms),
                                  ("rs", alpha_rs > 0), ("rd", p_rd > 0)) if on]
    if not techniques:
        return " ".join(words)
    technique = rng.choice(techniques)
    if technique == "sr":
        words = _synonym_replacement(words, max(1, int(alpha_sr * n_words)), synonyms, rng)
    elif technique == "ri":
        words = _random_insertion(words, max(1, int(alpha_ri * n_words)), synonyms, rng)
    elif technique == "rs":
        words = _random_swap(words, max(1, int(alpha_rs * n_words)), rng)
    else:
        words = _random_deletion(words, p_rd, rng)
    return " ".join(words)


def _synonym_replacement(words: list[str], n: int, synonyms: Mapping[str, Sequence[str]],
                         rng: random.Random) -> list[str]:
    candidates = sorted({w for w in words if w not in STOP_WORDS and synonyms.get(w)})
    rng.shuffle(candidates)
    for word in candidates[:n]:
        choice = rng.choice(list(synonyms[word]))
        words = [choice if w == word else w for w in words]
    return " ".join(words).split()


def _random_insertion(words: list[str], n: int, synonyms: Mapping[str, Sequence[str]],
                      rng: random.Random) -> list[str]:
    words = list(words)
    with_synonyms = [w for w in words if synonyms.get(w)]
    for _ in range(n if with_synonyms else 0):
        words.insert(rng.randrange(len(words)), rng.choice(list(synonyms[rng.choice(with_synonyms)])))
    return words


def _random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    words = list(words)
    if len(words) < 2:
        return words
    for _ in range(n):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


def _random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    if len(words) == 1:
        return words
    kept = [w for w in words if rng.random() > p]
    return kept or [rng.choice(words)]


def eda_views(captions: Sequence[str], rng: random.Random, **eda_params) -> list[str]:
    """One EDA view per caption (see ``eda`` for the parameters)."""
    return [eda(c, rng, **eda_params) for c in captions]


# -- defense plumbing -----------------------------------------------------------------
#: What the ``default`` (CPU) presets of the augmenting defenses set: no image or caption
#: views. At 32 px, 10 epochs and from scratch, SimCLR crops and EDA alone keep the model
#: near chance (zero-shot 0.18 against 0.66 without; ``benchmarks/clip_defense_budget.py``).
NO_AUGMENTATION = {"image_augmentation": "none", "eda": 0.0}


class AugmentParams(Params):
    """The augmentation params every augmenting defense has (its Params subclass this)."""

    image_augmentation: ImageAugmentation = Field(
        "simclr", description="image views: 'simclr' (flip, crop, colour jitter, grayscale, blur; RoCLIP/SafeCLIP), "
                              "'autoaugment' (CleanCLIP) or 'none'")
    augment_group: int = Field(1, ge=1, description="images per draw of augmentation parameters (1 = per image, "
                                                    "as the papers; larger is faster on CPU)")
    eda: float = Field(0.1, ge=0, le=1, description="EDA rate (alpha_sr = alpha_ri = alpha_rs = p_rd) for caption "
                                                    "views; 0 = no text augmentation")

    @property
    def identity_views(self) -> bool:
        """Is every view the batch itself (no image augmentation, no EDA)? ``augment_batch``
        then draws no randomness, so a defense may reuse one view's features for another."""
        return self.image_augmentation == "none" and self.eda == 0


def batch_rng(state: "TrainState") -> random.Random:
    """A ``random.Random`` drawn from the trainer's generator (EDA is pure Python)."""
    return random.Random(int(torch.randint(2**62, (1,), generator=state.generator)))


def augment_batch(batch: "Batch", state: "TrainState", params: AugmentParams,
                  synonyms: Mapping[str, Sequence[str]] | None = None) -> "Batch":
    """A view of ``batch``: augmented images and EDA captions (re-tokenised)."""
    images = augment_images(batch.images, image_augmentation(params.image_augmentation, batch.images.shape[-1]),
                            params.augment_group)
    if params.eda == 0:
        return dataclasses.replace(batch, images=images)
    a = params.eda
    captions = eda_views(batch.captions, batch_rng(state), alpha_sr=a, alpha_ri=a, alpha_rs=a, p_rd=a,
                         synonyms=synonyms)
    return dataclasses.replace(batch, images=images, captions=captions, tokens=state.model.tokenize(captions))
