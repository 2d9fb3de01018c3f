"""The CLIP poisoning track: one grid cell = data -> attack -> defense -> evaluators.

Stages (content-hashed in ``ctx.cache``, so shared work happens once per grid):

``clip-data``       the base data, once per data protocol: training pairs, the trusted
                    clean pairs some defenses fine-tune on, the labelled evaluation set
                    (all resized to the model's input) and the zero-shot templates;
``clip-poisoned``   once per attack and seed, reused by every defense;
``clip-prefix``     the first K epochs of standard CLIP on a poisoned set (a training
                    checkpoint), once per K: defenses whose first K epochs are standard
                    CLIP (``ClipDefense.standard_prefix``: ``none`` and CleanCLIP all of
                    the protocol's epochs, RoCLIP its warm-up) start from it;
``clip-model``      once per poisoned set, defense and seed (weights as safetensors,
                    plus the training log).

An attacked cell also evaluates its probe on the model the same defense trained on clean
data (the ``none`` attack's model for that seed, a cache hit when the clean cell ran):
the ``asr_clean`` base rate next to the ASR.
"""
from __future__ import annotations

import functools
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import datasets
import numpy as np
import torch
from pydantic import Field

import benchbench
from benchbench.api import Params, Task
from benchbench.cells import ResolvedCell
from benchbench.checkpoint import Checkpointer
from benchbench.clip import data as clip_data
from benchbench.clip import shards
from benchbench.clip.api import ClipDataAttack, ClipDefense, NoPoison, Poisoned, StandardClip
from benchbench.clip.evaluation import EvalInputs
from benchbench.clip.model import ClipModel, ModelSpec, input_size
from benchbench.clip.synthetic import SyntheticSpec, write_world
from benchbench.clip import trainer
from benchbench.clip.trainer import PairSet, TrainConfig
from benchbench.context import RunContext
from benchbench.errors import ConfigError
from benchbench.stages import Stage

SYNTHETIC = "synthetic"
TRAIN_LOG = "train_log.json"
EVAL_DATA_NEEDED = ("task param eval_data is required with a data path: a labelled evaluation set with "
                    "<class>/ folders (or test/<class>/ and train/<class>/), see docs/data.md")
PREFIX = "clip-prefix"  # standard CLIP's first epochs, shared by defenses that start the same way
CHECKPOINT = "checkpoint"


class ClipPoisoningTask(Task):
    name = "clip-poisoning"
    track = "clip"
    version = "2"  # 2: world 2 (class-token ViT, caption generator 2, 15 epochs; docs/worlds.md)
    description = "CLIP pre-training on poisoned image-caption pairs; zero-shot, linear-probe and ASR evaluation"

    class Params(Params):
        data: str = Field(SYNTHETIC, description="'synthetic' (the built-in shapes world) or a path to image-"
                                                 "caption pairs: imagefolder with metadata.jsonl/csv, parquet "
                                                 "(streamed from in_memory_below pairs), a save_to_disk folder, "
                                                 "or WebDataset tar shards (a .tar, a brace pattern such as "
                                                 "/data/cc3m/{00000..00331}.tar, or a folder of .tar), streamed")
        num_workers: int = Field(0, ge=0, description="DataLoader workers decoding streamed images (0: in the "
                                                      "training process); with shard data it shapes the epoch's "
                                                      "batch order (benchbench.clip.shards), so it is protocol")
        in_memory_below: int = Field(50_000, ge=0, description="tar shards, and parquet files holding at least "
                                                              "this many pairs: training sets of fewer pairs are "
                                                              "decoded into memory once (the same batches as the "
                                                              "stream, faster); 0: always stream")
        image_column: str = Field(clip_data.IMAGE, description="image column of the pairs")
        caption_column: str = Field(clip_data.CAPTION, description="caption column of the pairs")
        eval_data: str | None = Field(None, description="labelled evaluation set (imagefolder with test/<class>/ "
                                                        "and train/<class>/ or flat <class>/ folders, parquet, or "
                                                        "save_to_disk; docs/data.md); needed with a data path")
        eval_test_fraction: float = Field(0.5, gt=0, lt=1, description="a flat <class>/ evaluation folder: the "
                                                                        "fraction of each class that is test images "
                                                                        "(the rest train the linear probe), split "
                                                                        "with data_seed")
        data_name: str | None = Field(None, description="the data set's name on the board; null = the data "
                                                        "path's folder or file name ('synthetic-shapes' for the "
                                                        "synthetic world)")
        eval_image_column: str = Field(clip_data.IMAGE, description="image column of the evaluation set")
        eval_label_column: str = Field(clip_data.LABEL, description="ClassLabel column of the evaluation set")
        templates: list[str] | None = Field(None, description="zero-shot prompt templates containing '{}'; None: "
                                                              "the evaluation set's templates.json, else "
                                                              "'a photo of a {}.'")
        n_train: int = Field(5000, ge=1, description="training pairs (synthetic: generated; a path: a seeded "
                                                     "subsample of at most this many)")
        n_clean: int = Field(500, ge=0, description="trusted clean pairs held out of training for defenses that "
                                                    "fine-tune on clean data (CleanCLIP)")
        n_eval_train: int = Field(800, ge=8, description="synthetic: labelled linear-probe training images")
        n_eval_test: int = Field(400, ge=8, description="synthetic: labelled test images")
        data_seed: int = Field(0, description="seed of the synthetic world and of the train/clean split")
        model: str = Field("bb-tiny-vit", description="open_clip model name (tiny CPU configs: bb-tiny-vit)")
        pretrained: str | None = Field(None, description="local checkpoint file to start from (never downloaded)")
        image_size: int | None = Field(None, description="input size override; None: the model config's")
        context_length: int | None = Field(None, description="tokenizer context override; None: the config's")
        epochs: int = Field(15, ge=1, description="training epochs (a defense's phases may add their own); 15: "
                                                  "the smallest measured budget at which a plain model meets "
                                                  "the world's retrieval principle C5 (docs/worlds.md)")
        batch_size: int = Field(128, ge=2, description="pairs per contrastive batch")
        lr: float = Field(2.5e-3, gt=0, description="peak AdamW learning rate (2.5e-3: measured on plain models "
                                                    "for the world's retrieval principle C5, docs/worlds.md)")
        weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (not on gains and biases)")
        warmup: float = Field(0.1, ge=0, lt=1, description="fraction of steps of linear lr warm-up")

    added_params: ClassVar = ("eval_test_fraction", "data_name", "num_workers", "in_memory_below")

    presets: ClassVar = {
        "smoke": {"n_train": 256, "n_clean": 64, "n_eval_train": 64, "n_eval_test": 64, "epochs": 1,
                  "batch_size": 64},
        "default": {},
        "paper": {"model": "ViT-B-32", "n_train": 100_000, "n_clean": 10_000, "n_eval_train": 10_000,
                  "n_eval_test": 5_000, "epochs": 32, "batch_size": 256, "lr": 5e-4, "warmup": 0.02},
    }

    # -- leaderboard columns -------------------------------------------------------------
    def dataset_name(self) -> str:
        if self.params.data_name:
            return self.params.data_name
        data = self.params.data
        if data == SYNTHETIC:
            return "synthetic-shapes"
        if shards.is_shards(data) and not Path(data).is_dir():  # .../cc3m/{00000..00331}.tar: cc3m
            return Path(data).parent.name
        return Path(data).name

    def check_data(self) -> None:
        """The pairs' and the evaluation set's layouts and columns, without decoding an image."""
        p = self.params
        if p.data == SYNTHETIC:
            return
        if p.eval_data is None:
            raise ConfigError(EVAL_DATA_NEEDED)
        if shards.is_shards(p.data):
            shards.expand(p.data)
        else:
            clip_data.check_pairs(Path(p.data), p.image_column, p.caption_column)
        clip_data.check_labelled(Path(p.eval_data), p.eval_label_column)

    def model_name(self) -> str:
        return self.params.model

    # -- protocol pieces -----------------------------------------------------------------
    def model_spec(self) -> ModelSpec:
        p = self.params
        return ModelSpec(p.model, p.pretrained, p.image_size, p.context_length)

    def train_config(self, seed: int, progress: bool, precision: str = "fp32",
                     checkpoints: Checkpointer | None = None) -> TrainConfig:
        p = self.params
        return TrainConfig(p.epochs, p.batch_size, p.lr, p.weight_decay, p.warmup, seed, progress, precision,
                           p.num_workers, checkpoints)

    def _data_identity(self) -> dict:
        """What the base data depends on (not the training budget: epochs share data)."""
        keys = ("data", "image_column", "caption_column", "eval_data", "eval_image_column", "eval_label_column",
                "n_train", "n_clean", "data_seed")
        if self.params.data == SYNTHETIC:
            keys += ("n_eval_train", "n_eval_test")
        elif self._streamed:
            keys += ("in_memory_below",)
        ident = {k: getattr(self.params, k) for k in keys}
        if self.params.eval_test_fraction != type(self.params).model_fields["eval_test_fraction"].default:
            ident["eval_test_fraction"] = self.params.eval_test_fraction  # keys from before the param hold
        ident.update(task_version=self.version, image_size=input_size(self.model_spec()))
        for key in ("data", "eval_data"):
            if ident[key] not in (None, SYNTHETIC):
                ident[key + "_fingerprint"] = _fingerprint(ident[key])
        return ident

    # -- stages --------------------------------------------------------------------------
    def base_data(self, ctx: RunContext) -> Stage:
        return ctx.cache.get_or_build("clip-data", {"data": self._data_identity()}, self._build_base)

    def _build_base(self, out: Path) -> None:
        p, size = self.params, input_size(self.model_spec())
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            if p.data == SYNTHETIC:
                spec = SyntheticSpec(n_pairs=p.n_train + p.n_clean, n_eval_train=p.n_eval_train,
                                     n_eval_test=p.n_eval_test, image_size=size, seed=p.data_seed)
                pairs_path, eval_path = write_world(Path(tmp) / "world", spec)
                columns = (clip_data.IMAGE, clip_data.CAPTION, clip_data.IMAGE, clip_data.LABEL)
            elif p.eval_data is None:
                raise ConfigError(EVAL_DATA_NEEDED)
            else:
                pairs_path, eval_path = Path(p.data), Path(p.eval_data)
                columns = (p.image_column, p.caption_column, p.eval_image_column, p.eval_label_column)
            cache = Path(tmp) / "hf-cache"
            if self._streamed:
                pairs = shards.ShardIndex.build(p.data, p.image_column, p.caption_column)
            else:
                pairs = clip_data.load_pairs(pairs_path, size, columns[0], columns[1], cache_dir=cache)
            evaluation = clip_data.load_labelled(eval_path, size, columns[2], columns[3], cache_dir=cache,
                                                 split_seed=p.data_seed, test_fraction=p.eval_test_fraction)
            templates = tuple(p.templates) if p.templates else clip_data.load_templates(eval_path)
        order = np.random.default_rng(p.data_seed).permutation(len(pairs))
        if len(pairs) <= p.n_clean:
            raise ConfigError(f"{len(pairs)} pairs cannot spare n_clean={p.n_clean} trusted pairs; lower n_clean")
        if self._streamed:
            self._split_shards(pairs, order, size, out)
        else:
            pairs.select(order[p.n_clean:p.n_clean + p.n_train]).save_to_disk(str(out / "train"))
            pairs.select(order[:p.n_clean]).save_to_disk(str(out / "clean"))
        evaluation.save_to_disk(str(out / "eval"))
        (out / clip_data.TEMPLATES_FILE).write_text(json.dumps(list(templates), indent=1))

    @functools.cached_property
    def _streamed(self) -> bool:
        """Do the pairs go through ``clip.shards``: tar shards always, parquet files when
        they hold at least ``in_memory_below`` pairs (below, the in-memory loader as before).
        Cached: it reads every parquet footer, and the task asks at each stage."""
        p = self.params
        if p.data == SYNTHETIC:
            return False
        parquet = shards.parquet_files(p.data)
        return shards.is_shards(p.data) or bool(parquet) and shards.parquet_rows(parquet) >= p.in_memory_below

    def _split_shards(self, index: shards.ShardIndex, order: np.ndarray, size: int, out: Path) -> None:
        """The seeded train/clean split of shard records: the clean pairs decoded in memory,
        the training rows (in shard order) streamed, or decoded with their shard per row
        when fewer than ``in_memory_below`` (the same batches either way)."""
        p = self.params
        train = shards.StreamedPairs(index, sorted(order[p.n_clean:p.n_clean + p.n_train].tolist()), size)
        clean = shards.StreamedPairs(index, order[:p.n_clean].tolist(), size)
        clean.select(range(len(clean))).save_to_disk(str(out / "clean"))
        if len(train) < p.in_memory_below:
            decoded = train.select(range(len(train)))
            decoded.add_column(clip_data.SHARD, train.shard_of.tolist()).save_to_disk(str(out / "train"))
        else:
            train.save_to_disk(out / "train")

    def poisoned_data(self, base: Stage, attack: ClipDataAttack, ctx: RunContext) -> Stage:
        def build(out: Path) -> None:
            train = Poisoned.load_pairs(base.path / "train")
            test = datasets.load_from_disk(str(base.path / "eval"))["test"]
            attack.poison(train, test, ctx.seed).save(out)

        return ctx.cache.get_or_build("clip-poisoned", {"data": base.key, "attack": attack.identity(),
                                                        "seed": ctx.seed}, build)

    def trained_model(self, base: Stage, attack: ClipDataAttack, defense: ClipDefense, ctx: RunContext) -> Stage:
        """The defense's model; a killed build resumes from its checkpoints (``ctx.checkpoint_every``),
        and a defense whose first epochs are standard CLIP starts from the shared
        ``clip-prefix`` stage of those epochs (``ClipDefense.standard_prefix``)."""
        poisoned = self.poisoned_data(base, attack, ctx)
        parts = {"data": poisoned.key, "defense": defense.identity(), "task": self.identity(drop=("data_name",)),
                 "seed": ctx.seed}
        checkpoints = Checkpointer(ctx.cache.checkpoint_folder("clip-model", parts), ctx.checkpoint_every,
                                   what=f"clip-model: {defense.name} on {attack.name}, seed {ctx.seed}")

        def build(out: Path) -> None:
            def start_from_prefix(config: TrainConfig, n_pairs: int) -> None:
                epochs = defense.standard_prefix(config, n_pairs)
                if epochs > 0 and not checkpoints.exists():
                    state = Checkpointer(self.standard_prefix(base, poisoned, epochs, ctx).path / CHECKPOINT).load()
                    checkpoints.save({**state, "defense": None})  # the defense starts fresh from here

            model, log = self._train(base, poisoned, defense, ctx, checkpoints, before=start_from_prefix)
            model.save(out)
            defense.save_artifacts(out)
            (out / TRAIN_LOG).write_text(json.dumps(log, indent=1))

        return ctx.cache.get_or_build("clip-model", parts, build)

    def standard_prefix(self, base: Stage, poisoned: Stage, epochs: int, ctx: RunContext) -> Stage:
        """The first ``epochs`` epochs of standard CLIP on ``poisoned`` (the protocol's
        schedule, cut short) as a checkpoint: the ``none`` model's training and every
        defense that declares them as its ``standard_prefix`` share it. It is built on top
        of the longest shorter prefix already in the cache (or being built: it waits), so
        one standard training serves every cut point the grid's defenses need."""
        def parts(k: int) -> dict:
            return {"data": poisoned.key, "task": self.identity(drop=("data_name",)), "seed": ctx.seed,
                    "epochs": k}

        def build(out: Path) -> None:
            checkpoints = Checkpointer(ctx.cache.checkpoint_folder(PREFIX, parts(epochs)), ctx.checkpoint_every,
                                       what=f"{PREFIX}: {epochs} epochs, seed {ctx.seed}")
            if not checkpoints.exists():
                shorter = next((s for k in range(epochs - 1, 0, -1) if (s := ctx.cache.find(PREFIX, parts(k)))),
                               None)
                if shorter is not None:
                    checkpoints.save(Checkpointer(shorter.path / CHECKPOINT).load())
            self._train(base, poisoned, StandardClip(preset=ctx.preset), ctx, checkpoints, stop_after=epochs)
            shutil.copytree(checkpoints.folder, out / CHECKPOINT)

        return ctx.cache.get_or_build(PREFIX, parts(epochs), build)

    def _train(self, base: Stage, poisoned: Stage, defense: ClipDefense, ctx: RunContext, checkpoints: Checkpointer,
               before: Callable[[TrainConfig, int], None] | None = None,
               stop_after: int | None = None) -> tuple[ClipModel, list[dict]]:
        """Train a fresh model of the protocol on the poisoned pairs through ``defense``
        (``before(config, n_pairs)`` runs first, e.g. to seed the checkpoint folder)."""
        train = Poisoned.load(poisoned.path).train
        clean = datasets.load_from_disk(str(base.path / "clean"))
        config = self.train_config(ctx.seed, ctx.progress, ctx.precision, checkpoints)
        if before is not None:
            before(config, len(train))
        model = ClipModel.create(self.model_spec(), seed=ctx.seed, device=ctx.device)
        if isinstance(train, shards.StreamedPairs):
            data = train.streaming(self.params.num_workers).tokenized(model.tokenize)
        else:
            data = PairSet.from_dataset(train, model)
        clean_pairs = PairSet.from_dataset(clean, model) if len(clean) else None
        poison = torch.tensor(train[clip_data.POISON], dtype=torch.bool)
        if stop_after is None:
            log = defense.train(model, config, data, clean=clean_pairs, poison=poison)
        else:
            log = trainer.train(model, defense, config, data, clean=clean_pairs, poison=poison, stop_after=stop_after)
        return model, log

    # -- the cell ------------------------------------------------------------------------
    def run(self, cell: ResolvedCell, ctx: RunContext) -> dict[str, dict[str, float]]:
        with clip_data.quiet():
            return self._run(cell, ctx)

    def _run(self, cell: ResolvedCell, ctx: RunContext) -> dict[str, dict[str, float]]:
        base = self.base_data(ctx)
        # a test-time defense evaluates the none defense's model (the none cells' stage)
        trainer = StandardClip(preset=ctx.preset) if cell.defense.test_time else cell.defense
        model_stage = self.trained_model(base, cell.attack, trainer, ctx)
        poisoned = Poisoned.load(self.poisoned_data(base, cell.attack, ctx).path)
        probe = poisoned.probe
        evaluation = datasets.load_from_disk(str(base.path / "eval"))

        def defended(stage: Stage) -> ClipModel:
            model = ClipModel.load(stage.path, ctx.device)
            model.purifier = cell.defense.purifier(ctx)
            return model

        clean_fn = None
        if probe is not None:
            def clean_fn() -> ClipModel:
                return defended(self.trained_model(base, NoPoison(), trainer, ctx))

        inputs = EvalInputs(
            model=defended(model_stage),
            test=clip_data.Labelled.from_dataset(evaluation["test"]),
            templates=tuple(json.loads((base.path / clip_data.TEMPLATES_FILE).read_text())),
            attack=cell.attack, probe=probe, seed=ctx.seed,
            probe_train=clip_data.Labelled.from_dataset(evaluation["train"]) if "train" in evaluation else None,
            clean_model_fn=clean_fn,
            # streamed training pairs: no diagnostic encodes all their images once more (docs/scaling.md)
            plain_model_fn=None if isinstance(poisoned.train, shards.StreamedPairs) else lambda: ClipModel.load(
                self.trained_model(base, cell.attack, StandardClip(preset=ctx.preset), ctx).path, ctx.device),
            model_dir=model_stage.path, train=poisoned.train,
        )
        return {e.name: e.evaluate(inputs) for e in cell.evaluators}


def _fingerprint(spec: str) -> dict:
    """Cheap identity of user data: file count, total size and latest mtime (a changed
    file changes the stage key; its content is not hashed)."""
    path = Path(spec)
    if shards.is_shards(spec) and not path.is_dir():
        files = [Path(f) for f in shards.expand(spec) if Path(f).is_file()]  # a brace pattern or one .tar
    elif not path.exists():
        return {"missing": True}
    else:
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    stats = [f.stat() for f in files]
    return {"files": len(files), "bytes": sum(s.st_size for s in stats),
            "mtime": max((s.st_mtime for s in stats), default=0.0)}


@benchbench.hookimpl
def benchbench_tasks() -> list[type[Task]]:
    return [ClipPoisoningTask]
