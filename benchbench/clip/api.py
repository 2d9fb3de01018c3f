"""The CLIP track's refinement of the component contract: what its plugins implement.

- ``ClipDataAttack.poison(train, test, seed) -> Poisoned``: the poisoned training pairs
  (a ``datasets.Dataset`` with ``image``, ``caption`` and the ground-truth flag
  ``is_poison``) plus a ``Probe``: the evaluation-set rows the attack succeeds on and the
  class each should be pushed to. Backdoors also implement ``apply_trigger``; the ASR
  evaluator calls it on the probe rows, so it needs no knowledge of the attack type.
- ``ClipDefense``: trains through the shared trainer (``benchbench.clip.trainer``) and
  overrides its hooks (``phases``, ``on_epoch_start``, ``augment``, ``loss``,
  ``on_epoch_end``); see that module for what each hook is for. A defense that does not
  fit the loop (say, filtering the data with an external model first) overrides
  ``train`` and may still call ``super().train``. At inference, ``purifier(ctx)`` may return
  a ``benchbench.purify.Purifier`` that every evaluated image goes through; a defense with
  ``test_time = True`` is not trained (the task evaluates ``none``'s model behind it).
- ``ClipEvaluator.evaluate(inputs: EvalInputs) -> {metric: value}``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import datasets
import torch

from benchbench.api import DataAttack, Defense, Evaluator
from benchbench.clip.data import POISON
from benchbench.clip.evaluation import EvalInputs
from benchbench.clip.model import ClipModel, Features, contrastive_loss
from benchbench.clip.shards import StreamedPairs
from benchbench.clip.trainer import Batch, PairSet, Phase, TrainConfig, TrainState, train
from benchbench.context import RunContext
from benchbench.purify import Purifier

TRACK = "clip"


@dataclass(frozen=True)
class Probe:
    """What attack success is measured on (JSON data, saved with the poisoned set).

    ASR = fraction of ``indices`` (rows of the evaluation test split) whose zero-shot
    prediction is the matching entry of ``targets``, after the attack's trigger is
    applied if ``triggered``. ``spec`` records the attack's choices (target names,
    trigger parameters) for the reader.
    """

    indices: tuple[int, ...]
    targets: tuple[int, ...]
    triggered: bool
    spec: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.targets):
            raise ValueError("a probe needs one target class per index")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Probe":
        d = json.loads(text)
        return cls(tuple(d["indices"]), tuple(d["targets"]), d["triggered"], d["spec"])


@dataclass
class Poisoned:
    """An attack's output: the training pairs (with ``is_poison``) and its probe."""

    train: datasets.Dataset | StreamedPairs  # streamed: tar shards above the task's in_memory_below
    probe: Probe | None

    def save(self, directory: Path) -> None:
        self.train.save_to_disk(str(directory / "train"))
        if self.probe is not None:
            (directory / "probe.json").write_text(self.probe.to_json())

    @classmethod
    def load(cls, directory: Path) -> "Poisoned":
        probe_file = directory / "probe.json"
        probe = Probe.from_json(probe_file.read_text()) if probe_file.exists() else None
        return cls(cls.load_pairs(directory / "train"), probe)

    @staticmethod
    def load_pairs(folder: Path) -> "datasets.Dataset | StreamedPairs":
        """Training pairs a stage saved: a ``Dataset``, or streamed pairs (``clip.shards``)."""
        if StreamedPairs.on_disk(folder):
            return StreamedPairs.load_from_disk(folder)
        return datasets.load_from_disk(str(folder))


class ClipDataAttack(DataAttack):
    track: ClassVar[str] = TRACK

    def poison(self, train: datasets.Dataset, test: datasets.Dataset, seed: int) -> Poisoned:
        """Return the poisoned ``train`` pairs and the probe; ``test`` is the labelled
        evaluation split (``image``, ``label`` as a ``ClassLabel``) the probe indexes."""
        raise NotImplementedError

    def apply_trigger(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Backdoors: return uint8 images (B, 3, S, S) with the trigger added."""
        raise NotImplementedError(f"attack '{self.name}' has no trigger")


class NoPoison(ClipDataAttack):
    """The clean reference column. Defined in the kit (and registered by the attacks
    plugin) because the task also trains each defense on clean data to report the base
    rate of every attack's probe."""

    name = "none"
    description = "no poisoning: the clean training pairs"

    def poison(self, train: datasets.Dataset, test: datasets.Dataset, seed: int) -> Poisoned:
        return Poisoned(train.add_column(POISON, [False] * len(train)), None)


class ClipDefense(Defense):
    """A defense trains a CLIP model; by default through the shared trainer's hooks."""

    track: ClassVar[str] = TRACK
    needs_tokens: ClassVar[bool] = False  # give ``loss`` patch/word tokens (costs a little)

    def train(self, model: ClipModel, config: TrainConfig, data: PairSet, clean: PairSet | None = None,
              poison: torch.Tensor | None = None) -> list[dict]:
        """Train ``model`` in place on ``data`` (``clean``: trusted pairs a defense may use;
        ``poison``: ground truth for the log only). Returns the per-epoch log."""
        return train(model, self, config, data, clean=clean, poison=poison)

    def standard_prefix(self, config: TrainConfig, n_pairs: int) -> int:
        """How many leading epochs of this defense's training are exactly standard CLIP
        training (the same phase, lr schedule, batches and random draws as ``none``), with
        no state of the defense's that those epochs would have changed. The task trains
        that prefix once per poisoned data set and seed, as a cached stage, and every
        defense declaring it resumes from there: the same weights and log as training it
        alone, bit for bit (tests/clip/test_standard_prefix.py), for less compute.
        0 (the default) shares nothing; declare more only when it holds, and only while
        ``trains_as`` the declaring class (a subclass that changes training must not
        inherit the claim)."""
        return 0

    def trains_as(self, cls: type, *hooks: str) -> bool:
        """Does this defense train as ``cls`` does: none of the training hooks (and
        ``hooks``) nor ``needs_tokens`` overridden by a subclass of ``cls``?"""
        own = type(self)
        names = ("train", "phases", "on_epoch_start", "augment", "loss", "on_epoch_end", *hooks)
        return own.needs_tokens == cls.needs_tokens and all(getattr(own, h) is getattr(cls, h) for h in names)

    # -- hooks (see benchbench.clip.trainer) -------------------------------------------
    def phases(self, config: TrainConfig) -> list[Phase]:
        return [Phase("train", config.epochs)]

    def on_epoch_start(self, state: TrainState) -> torch.Tensor | None:
        return None

    def augment(self, batch: Batch, state: TrainState) -> Batch:
        return batch

    def loss(self, batch: Batch, features: Features, state: TrainState) -> dict[str, torch.Tensor]:
        return {"clip": contrastive_loss(features.image, features.text, features.logit_scale)}

    def on_epoch_end(self, state: TrainState) -> None:
        return None

    def save_artifacts(self, directory: Path) -> None:
        """After training, write what evaluators may read next to the model (the task
        passes that folder as ``EvalInputs.model_dir``), e.g. re-matching records."""
        return None

    # -- inference -----------------------------------------------------------------------
    def purifier(self, ctx: RunContext) -> Purifier | None:
        """A test-time transform of every image the evaluated model encodes (test images,
        triggered probe images, the linear probe's training images), or None. The task sets
        it on the cell's model and on the same defense's clean-data model (``asr_clean``),
        not on the plain ``none`` model diagnostics compare with, and never in training."""
        return None


class StandardClip(ClipDefense):
    """Standard CLIP training, no defense: every hook keeps ``ClipDefense``'s default. It
    lives in the kit, not only in its plugin, because the task also trains it as the
    *plain model* that diagnostics compare a defense with (same data, same seed: the same
    stage as the grid's ``none`` cell)."""

    name = "none"
    description = "standard CLIP training (no defense)"

    def standard_prefix(self, config: TrainConfig, n_pairs: int) -> int:
        return config.epochs if self.trains_as(StandardClip) else 0


class ClipEvaluator(Evaluator):
    track: ClassVar[str] = TRACK

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        raise NotImplementedError


__all__ = ["Batch", "ClipDataAttack", "ClipDefense", "ClipEvaluator", "EvalInputs", "Features", "NoPoison",
           "PairSet", "Phase", "Poisoned", "Probe", "StandardClip", "TrainConfig", "TrainState",
           "contrastive_loss"]
