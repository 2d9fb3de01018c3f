"""The CLIP contrastive trainer every defense runs, and the hooks it calls.

One loop serves all defenses so that what differs between two leaderboard rows is the
defense, not the training code. The loop is CLIP's: symmetric InfoNCE with a learnable
temperature clamped to <= 100, AdamW (no weight decay on gains, biases and the
temperature, as open_clip trains), linear warm-up then cosine decay per phase, a fixed
seed for initialisation, batch order and any randomness a hook draws from
``state.generator``, so a cell is reproducible on CPU.

A defense shapes training through five hooks (defaults in ``ClipDefense``):

``phases(config)``
    the training plan: a list of ``Phase(name, epochs, data, lr)``. Standard CLIP is one
    phase over the (poisoned) training pairs. SafeCLIP: a unimodal warm-up phase, one
    low-lr CLIP epoch, then the main phase. CleanCLIP: the standard phase, then a
    ``finetune`` phase on the trusted ``clean`` pairs with its own lr.
``on_epoch_start(state) -> pairing | None``
    called before each epoch; may return a caption row per image (a LongTensor of
    length N; -1 drops the image for this epoch) to re-match pairs (RoCLIP/OTCCLIP
    matching every K epochs), or ``None`` for the data's own pairs. It is also where
    per-epoch state is recomputed (SafeCLIP's GMM safe set), using
    ``state.embed_all()`` for embeddings of the whole set (with patch and word tokens
    if asked).
``augment(batch, state) -> Batch``
    replaces the batch before the forward pass (image augmentations, EDA on captions).
``loss(batch, features, state) -> {term: tensor}``
    the loss terms, summed and logged per epoch; ``features`` holds global embeddings,
    the temperature and, if the defense sets ``needs_tokens``, patch tokens, word tokens
    and the word mask. Extra views are encoded with ``state.model.encode``.
``on_epoch_end(state)``
    bookkeeping after an epoch.

The trainer also records, per epoch, how many pairs a re-matching changed and, when it
is given the ground-truth poison flags (never shown to the defense), the precision and
recall of those changes against the poisoned pairs: the diagnostics of re-matching
defenses. A non-finite loss or weight fails training with ``DivergedError``, so a diverged
model is never cached or scored.

``TrainConfig.precision`` runs forward passes and losses under autocast (bf16, fp16 with
a grad scaler; fp32 is the plain path). ``TrainConfig.checkpoints`` saves the loop's
whole state every N steps or epoch (``benchbench.checkpoint``): weights, optimiser and
scheduler, the generator and global RNGs, the epoch's pairing, order and partial sums,
and the defense's ``state_dict()``; a training that finds a checkpoint continues from it
and ends with the weights and log of an uninterrupted one.

**Data.** The loop reads images through its data's ``feed`` (this rank's images of each
global batch, from a batch on: a resumed epoch restarts there) and ``chunks`` (every row,
for ``embed_all``): ``PairSet`` slices them from memory, ``clip.shards.StreamedPairs``
streams them from tar or parquet shards through DataLoader workers. An epoch's order is
``shards.epoch_order``'s: for data without shards (the embedded default) the
``randperm`` of the generator; for shard data, shard by shard, the same in memory and
streamed.

**Several processes.** Under ``torch.distributed`` (``benchbench.distributed``) with W
processes, one training runs on all of them: every rank draws the same batch order from
the same seed and generator, starts from the same model (rank 0's, broadcast) and takes
its contiguous 1/W slice of each global batch of ``batch_size`` (which W must divide).
``forward_backward`` is one step's work: the slice through ``augment``, the forward pass and ``loss``, then
the backward pass and the gradients averaged over the ranks, so every rank takes the
same optimiser step. The model is not wrapped in ``DistributedDataParallel``: its reducer
needs every forward pass to go through the wrapper, while ``ClipModel.encode`` calls
``encode_image``/``encode_text``/``forward_intermediates`` and defenses encode second
views themselves; so ``distributed.average_gradients`` does what the reducer does with
one flattened all-reduce per step, after the backward pass instead of overlapping it.
The logged losses are the mean over the ranks of each step's terms, the same for every
rank; only rank 0 saves checkpoints (every rank may load them).

Which loss terms are global under W > 1 (the same numbers as one process on the global
batch, to rounding) and which are per rank (each rank's slice alone, then averaged):

- global: ``contrastive_loss`` (CLIP's loss in ``none``, RoCLIP, OTCCLIP and CleanCLIP's
  pre-training and fine-tuning), whose negatives are every rank's rows, gathered with
  gradients by open_clip; RoCLIP's and OTCCLIP's caption pool and match log (every
  rank's rows enter them, ``rematch``), so matching picks what one process picks;
  SafeCLIP's GMM split (every rank computes it from ``state.embed_all()``);
- per rank: SafeCLIP's cross-augmented CLIP loss and its unimodal loss (one-way InfoNCE,
  ``benchbench.clip.inmodal``: negatives from the rank's slice, nearest neighbours from
  the rank's own memory banks) and the safe and risky shares weighting them; CleanCLIP's
  in-modal loss; OTCCLIP's OT inter- and intra-modality losses (over the first
  ``ot_batch`` pairs of the rank's slice); ``rematch='suspect'``'s lowest-similarity
  share (of the rank's slice).

Hooks draw their randomness (augmentations) from streams every rank shares, which keeps
the ranks in step; so under W > 1 row i of every rank's slice gets the same random view
parameters, and an augmented training is not the draw one process makes. A resumed
W > 1 training restores rank 0's copy of per-rank state (SafeCLIP's memory banks).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Literal

import torch

from benchbench import distributed
from benchbench.checkpoint import Checkpointer, global_rng_state, set_global_rng_state
from benchbench.clip.model import ClipModel, Features
from benchbench.clip.shards import chunk_rows, epoch_order
from benchbench.numerics import require_finite, require_finite_weights
from benchbench.precision import Precision
from benchbench.progress import progress

if TYPE_CHECKING:
    import datasets

    from benchbench.clip.api import ClipDefense
    from benchbench.clip.shards import StreamedPairs


@dataclass
class PairSet:
    """Image-caption pairs in memory: row i pairs ``images[i]`` with ``captions[i]``.

    The trainer reads images through ``feed`` and ``chunks``, the interface
    ``clip.shards.StreamedPairs`` shares, so one loop trains on both."""

    images: torch.Tensor  # (N, 3, S, S) uint8, at the model's input size
    captions: list[str]
    tokens: torch.Tensor  # (N, L) token ids of ``captions``
    # each row's shard when the pairs came from tar shards: the epoch order is then
    # ``shards.epoch_order``'s, the batches a stream of the same shards gives; None: one shard
    shard_of: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.captions)

    @classmethod
    def from_dataset(cls, ds: "datasets.Dataset", model: ClipModel) -> "PairSet":
        from benchbench.clip.data import CAPTION, SHARD, to_uint8

        captions = list(ds[CAPTION])
        shard_of = torch.tensor(ds[SHARD], dtype=torch.long) if SHARD in ds.column_names else None
        return cls(to_uint8(ds), captions, model.tokenize(captions), shard_of)

    def feed(self, rows: torch.Tensor, batch_size: int, first_batch: int, world: int, rank: int
             ) -> Iterator[torch.Tensor]:
        """This rank's images of each global batch of ``rows`` from ``first_batch`` on."""
        local = batch_size // world
        for j in range(first_batch, len(rows) // batch_size):
            yield self.images[rows[j * batch_size + rank * local:j * batch_size + (rank + 1) * local]]

    def chunks(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every row once, as ``(rows, images)`` chunks (for embeddings of the whole set):
        ``batch_size`` rows at a time, cut where the shard changes (``shards.chunk_rows``)."""
        shard_of = [0] * len(self) if self.shard_of is None else self.shard_of.tolist()
        for rows in chunk_rows(shard_of, batch_size):
            yield torch.tensor(rows), self.images[rows[0]:rows[-1] + 1]


@dataclass(frozen=True)
class TrainConfig:
    """The protocol's training budget: the same for every defense in a grid."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.1
    warmup: float = 0.1  # fraction of a phase's steps spent warming the lr up linearly
    seed: int = 0
    progress: bool = True
    precision: str = "fp32"  # benchbench.precision: fp32 | bf16 | fp16 (autocast; fp16 with a grad scaler)
    workers: int = 0  # loader workers: with shard data they shape the epoch order (shards.epoch_order)
    # where and how often to checkpoint (not protocol: it changes no number); None: never
    checkpoints: Checkpointer | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own optimiser and lr schedule."""

    name: str
    epochs: int
    data: Literal["train", "clean"] = "train"  # "clean": the trusted pairs the protocol provides
    lr: float | None = None  # None: the protocol's lr


@dataclass
class Batch:
    index: torch.Tensor  # image rows of the phase's data
    caption_index: torch.Tensor  # caption rows paired with them (== index unless re-matched)
    images: torch.Tensor  # (B, 3, S, S) uint8
    tokens: torch.Tensor  # (B, L)
    captions: list[str]


@dataclass
class TrainState:
    """What hooks see. Draw randomness from ``generator`` to stay reproducible."""

    model: ClipModel
    data: PairSet
    config: TrainConfig
    phase: Phase
    generator: torch.Generator
    epoch: int = 0  # within the phase
    global_epoch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)
    timed_seconds: dict[str, float] = field(default_factory=dict)  # this epoch's, by ``timed``

    @contextmanager
    def timed(self, what: str) -> Iterator[None]:
        """Add the block's wall time to this epoch's ``timed`` log entry (e.g. "match"),
        so the cost evaluator can report what a defense's extra work costs."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timed_seconds[what] = self.timed_seconds.get(what, 0.0) + time.perf_counter() - start

    @torch.no_grad()
    def embed_all(self, with_tokens: bool = False, batch_size: int = 512) -> Features:
        """Embeddings of every image and every caption of ``data`` (own pairing, eval mode)."""
        net, was_training = self.model.net, self.model.net.training
        net.eval()
        rows, parts = [], []
        try:
            for index, images in self.data.chunks(batch_size):
                rows.append(index)
                parts.append(self.model.encode(images, self.data.tokens[index], with_tokens=with_tokens))
        finally:
            net.train(was_training)
        seen = torch.cat(rows)  # a stream's chunks come in shard order: put rows back in place
        order = None if bool((seen[1:] > seen[:-1]).all()) else seen.argsort()

        def cat(name: str) -> torch.Tensor | None:
            if getattr(parts[0], name) is None:
                return None
            joined = torch.cat([getattr(p, name) for p in parts])
            return joined if order is None else joined[order]

        return Features(cat("image"), cat("text"), parts[0].logit_scale, cat("image_tokens"),
                        cat("text_tokens"), cat("text_mask"))


def _optimizer(model: ClipModel, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without decay on gains, biases, embeddings of positions and the temperature
    (open_clip's ``exclude`` rule)."""
    decay, no_decay = [], []
    for name, p in model.net.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if skip else decay).append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=lr, fused=model.device in ("cpu", "cuda"))


def _schedule(opt: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LRScheduler:
    warm = max(1, round(total * warmup))
    return torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / warm, total_iters=warm),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warm)),
    ], milestones=[warm])


def _rematch_stats(pairing: torch.Tensor, poison: torch.Tensor | None) -> dict[str, float]:
    changed = pairing != torch.arange(len(pairing))
    stats = {"rematched": changed.float().mean().item(), "dropped": (pairing < 0).float().mean().item()}
    if poison is not None and len(poison) == len(pairing):
        stats["rematch_poison_recall"] = changed[poison].float().mean().item() if poison.any() else math.nan
        stats["rematch_precision"] = poison[changed].float().mean().item() if changed.any() else math.nan
    return stats


def _epoch_rows(pairs: "PairSet | StreamedPairs", keep: torch.Tensor, generator: torch.Generator,
                config: TrainConfig) -> torch.Tensor:
    """The epoch's kept rows in batch order (``shards.epoch_order``: a permutation of the
    rows for one shard, the embedded default and any set without shards)."""
    shard_of = pairs.shard_of if pairs.shard_of is not None else torch.zeros(len(pairs), dtype=torch.long)
    return epoch_order(shard_of, keep, generator, config.batch_size, distributed.world_size(), config.workers)


def forward_backward(defense: "ClipDefense", state: TrainState, precision: Precision, index: torch.Tensor,
                     pairing: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    """The gradients of one global batch, the image rows ``index`` of ``state.data`` each
    paired with caption row ``pairing[row]``, accumulated into the parameters' ``.grad``;
    returns the loss terms' values (their mean over the ranks).

    This rank takes its contiguous slice of ``index`` (``distributed.shard``), whose images
    are ``images`` (the data's ``feed``), through
    ``augment``, the forward pass and ``loss``; the backward pass runs the contrastive
    loss's gather backwards, then the gradients are averaged over the ranks. A non-finite
    loss on any rank fails every rank here, before the optimiser steps.
    """
    pairs, model = state.data, state.model
    index = index[distributed.shard(len(index))]
    caption_index = pairing[index]
    batch = Batch(index, caption_index, images, pairs.tokens[caption_index],
                  [pairs.captions[i] for i in caption_index.tolist()])
    batch = defense.augment(batch, state)
    with precision.autocast():
        features = model.encode(batch.images, batch.tokens, with_tokens=defense.needs_tokens)
        terms = defense.loss(batch, features, state)
        loss = sum(terms.values())
    precision.backward(loss)
    distributed.average_gradients(model.net.parameters())
    values = distributed.mean_over_ranks({k: float(v.detach()) for k, v in terms.items()})
    require_finite(values, f"CLIP loss ({state.phase.name} epoch {state.global_epoch} step {state.step})")
    return values


def train(model: ClipModel, defense: "ClipDefense", config: TrainConfig, data: PairSet,
          clean: PairSet | None = None, poison: torch.Tensor | None = None,
          stop_after: int | None = None) -> list[dict]:
    """Train ``model`` in place through ``defense``'s phases; return the per-epoch log.

    ``poison`` (bool per row of ``data``) is the ground truth, used only for the
    re-matching diagnostics in the log; hooks never see it. With ``config.checkpoints``
    the loop saves its whole state as it goes and starts from the folder's checkpoint if
    there is one, ending with the same weights and log as an uninterrupted run.
    ``stop_after`` ends the training after that many epochs of the plan with a checkpoint
    saved there (needs ``config.checkpoints``): a standard-CLIP prefix that defenses
    branch off (``ClipDefense.standard_prefix``). A checkpoint whose ``defense`` state is
    ``None`` is such a prefix: the defense starts from it with its own fresh state.
    """
    distributed.shard(config.batch_size)  # refuse a batch the ranks cannot split, before any work
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    precision = Precision(config.precision, model.device)
    history: list[dict] = []
    global_epoch = steps = 0
    resume = config.checkpoints.load() if config.checkpoints is not None else None
    if resume is not None:
        model.net.load_state_dict(resume["model"])
        if resume["defense"] is not None:
            defense.load_state_dict(resume["defense"])
        precision.load_state_dict(resume["precision"])
        history, steps = resume["history"], resume["steps"]
    distributed.broadcast_module(model.net)
    model.net.train()
    for phase_index, phase in enumerate(defense.phases(config)):
        pairs = data if phase.data == "train" else clean
        if resume is not None and phase_index < resume["phase"]:  # done before the checkpoint
            global_epoch += phase.epochs
            continue
        if pairs is None:
            raise ValueError(f"defense '{defense.name}' phase '{phase.name}' needs clean pairs; the task gave none")
        steps_per_epoch = len(pairs) // config.batch_size
        if steps_per_epoch == 0:
            raise ValueError(f"{len(pairs)} pairs are fewer than one batch of {config.batch_size}")
        opt = _optimizer(model, phase.lr or config.lr, config.weight_decay)
        sched = _schedule(opt, steps_per_epoch * phase.epochs, config.warmup)
        state = TrainState(model, pairs, config, phase, generator, global_epoch=global_epoch, history=history)
        first_epoch, in_epoch = 0, None
        if resume is not None:  # the phase the checkpoint was taken in
            opt.load_state_dict(resume["optimizer"])
            sched.load_state_dict(resume["scheduler"])
            generator.set_state(resume["generator"])
            set_global_rng_state(resume["rng"])
            first_epoch, global_epoch, in_epoch = resume["epoch"], resume["global_epoch"], resume["in_epoch"]
            state.step, resume = resume["phase_step"], None

        def checkpoint(epoch: int, position: dict | None) -> None:
            config.checkpoints.save({  # rank 0 writes it (the ranks' states agree); every rank may load it
                "model": model.net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "precision": precision.state_dict(), "generator": generator.get_state(), "rng": global_rng_state(),
                "defense": defense.state_dict(), "history": history, "steps": steps, "phase": phase_index,
                "epoch": epoch, "global_epoch": global_epoch, "phase_step": state.step, "in_epoch": position})

        for epoch in progress(range(first_epoch, phase.epochs), f"CLIP {defense.name}: {phase.name}",
                              enabled=config.progress and distributed.is_main()):
            state.epoch, state.global_epoch = epoch, global_epoch
            if in_epoch is None:
                start = time.perf_counter()
                pairing = defense.on_epoch_start(state)
                record: dict = {"phase": phase.name, "epoch": global_epoch, "lr": sched.get_last_lr()[-1]}
                if pairing is None:
                    pairing = torch.arange(len(pairs))
                else:
                    record.update(_rematch_stats(pairing, poison if phase.data == "train" else None))
                rows = _epoch_rows(pairs, pairing >= 0, generator, config)
                sums: dict[str, float] = {}
                first_batch = 0
            else:  # resumed inside this epoch: its pairing, order and partial sums were saved
                start = time.perf_counter() - in_epoch["seconds"]
                pairing, rows, record, sums, first_batch, state.timed_seconds = (
                    in_epoch[k] for k in ("pairing", "rows", "record", "sums", "batch", "timed"))
                in_epoch = None
            n_batches = len(rows) // config.batch_size
            feed = pairs.feed(rows, config.batch_size, first_batch, distributed.world_size(), distributed.rank())
            for b, images in zip(range(first_batch, n_batches), feed):
                opt.zero_grad(set_to_none=True)
                index = rows[b * config.batch_size:(b + 1) * config.batch_size]
                terms = forward_backward(defense, state, precision, index, pairing, images)
                precision.step(opt)
                sched.step()
                model.clamp_logit_scale()
                state.step += 1
                steps += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                if config.checkpoints is not None and config.checkpoints.due(steps):
                    checkpoint(epoch, {"batch": b + 1, "pairing": pairing, "rows": rows, "record": record,
                                       "sums": sums, "timed": state.timed_seconds,
                                       "seconds": time.perf_counter() - start})
            defense.on_epoch_end(state)
            record["loss"] = {k: v / max(1, n_batches) for k, v in sums.items()}
            record["logit_scale"] = model.net.logit_scale.detach().exp().item()
            record["seconds"] = round(time.perf_counter() - start, 3)
            record["steps"] = n_batches
            if state.timed_seconds:
                record["timed"] = {k: round(v, 3) for k, v in state.timed_seconds.items()}
                state.timed_seconds = {}
            history.append(record)
            global_epoch += 1
            if global_epoch == stop_after:
                checkpoint(epoch + 1, None)
                return history
            if config.checkpoints is not None and config.checkpoints.due(epoch_end=True):
                checkpoint(epoch + 1, None)
    require_finite_weights(model.net, f"CLIP model ({defense.name}, seed {config.seed})")
    model.net.eval()
    return history


__all__ = ["Batch", "PairSet", "Phase", "TrainConfig", "TrainState", "forward_backward", "train"]
