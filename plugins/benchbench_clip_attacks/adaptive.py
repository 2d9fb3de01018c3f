"""Adaptive targeted poisoning: attacks that know the defense re-matches captions.

Our design (issue 15; no public code attacks RoCLIP or OTCCLIP this way). Both keep
``targeted-poison``'s protocol and budget (``TargetedAttack``: the same targets, the
same adversarial classes, ``captions_per_target`` pairs per target), so their ASR
compares column to column with it; only the captions change:

- ``paraphrase-flood``: RoCLIP re-pairs each image with its nearest caption in a pool of
  recent captions, and a target's 20 copies of one or two captions are few points of
  that pool. Here every poison pair of a target carries a different paraphrase of one
  adversarial caption (one scene of the adversarial shape, in ``paraphrases`` distinct
  wordings: templates, synonyms, word orders), so the pool holds many of them around the
  adversarial meaning and nearest-neighbour re-matching keeps finding adversarial text.
- ``fine-grained-mimicry``: OTCCLIP ranks pooled captions by an OT distance between patch
  tokens and word tokens, which favours captions whose words name what the patches show.
  Here the captions copy the target image's own attribute words (colour, size, place,
  background, read from its pixels) and change only the object, in the templates that
  name the place or the background, so a token-level distance finds all but one word
  matching the image.

They write captions in the synthetic world's vocabulary (``benchbench.clip.synthetic``:
``paraphrases``, ``read_scene``), so they need the built-in world's classes.
"""
from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np
from PIL import Image
from pydantic import Field

from benchbench.clip.synthetic import ATTRIBUTE_TEMPLATES, SHAPES, SceneWords, paraphrases, read_scene
from benchbench.errors import ConfigError, DataError
from benchbench_clip_attacks.targeted import TargetedAttack, TargetParams


class AdaptiveParams(TargetParams):
    paraphrases: int | None = Field(None, ge=1, description="distinct captions per target, cycled over its "
                                                            "captions_per_target pairs; None: all distinct")


class WorldCaptionAttack(TargetedAttack):
    """A targeted attack whose captions are paraphrases the synthetic world writes."""

    Params = AdaptiveParams
    presets: ClassVar = {"smoke": {}, "default": {}, "paper": {}}  # targeted-poison's budget at every preset
    #: single-object templates the captions are drawn from (None: all of them)
    templates: ClassVar[Sequence[int] | None] = None
    adaptive_to = "caption re-matching (RoCLIP, OTCCLIP)"
    extends = "targeted-poison"

    def target_captions(self, train_captions: list[str], image: Image.Image, classes: Sequence[str],
                        adversarial: int, rng: np.random.Generator) -> list[str]:
        foreign = sorted(set(classes) - set(SHAPES))
        if foreign:
            raise ConfigError(f"attack '{self.name}' writes captions in the synthetic world's vocabulary, which has "
                              f"no class {', '.join(map(repr, foreign))}; use it with data: synthetic, or use "
                              "targeted-poison on your own data")
        p = self.params
        wanted = p.paraphrases or p.captions_per_target
        texts = paraphrases(classes[adversarial], wanted, int(rng.integers(2**31)), self.scene(image),
                            self.templates)
        if len(texts) < wanted:
            raise DataError(f"the world's vocabulary has only {len(texts)} wordings of '{texts[0]}'; lower the "
                            f"attack param paraphrases (asked: {wanted})")
        return [texts[i % wanted] for i in range(p.captions_per_target)]

    def scene(self, image: Image.Image) -> SceneWords | None:
        """The scene the captions describe (None: one the world draws)."""
        return None


class ParaphraseFlood(WorldCaptionAttack):
    name = "paraphrase-flood"
    description = "adaptive targeted poisoning: many paraphrases of one adversarial caption per target"


class FineGrainedMimicry(WorldCaptionAttack):
    name = "fine-grained-mimicry"
    description = "adaptive targeted poisoning: captions copy the target's attribute words, change the object"
    templates = ATTRIBUTE_TEMPLATES

    def scene(self, image: Image.Image) -> SceneWords | None:
        return read_scene(np.asarray(image.convert("RGB")))
