"""The ReID trainer: cross-entropy + batch-hard triplet on identity-balanced batches.

One loop serves every defense: it calls the ``ReidDefense`` hooks (see
``benchbench.reid.api``) and hands them a ``TrainState`` with everything a method needs
(model, optimizer, config, seed, stage cache, attack factory, standard losses). Batches
come from torchreid's ``RandomIdentitySampler`` (P identities x K images); losses are
torchreid's label-smoothed ``CrossEntropyLoss`` and hard-margin ``TripletLoss``.

Deterministic on CPU for a fixed seed: Python, NumPy (the sampler) and torch (model
init, augmentation) are seeded inside ``benchbench.numerics.isolated_rng`` and their
previous states restored. A non-finite loss or weight fails the training with
``DivergedError``, so no NaN model is cached.

Each step runs under ``precision``'s autocast (``benchbench.precision``; fp16 scales the
loss in ``TrainState.optimize``), and ``checkpoints`` saves the whole state every N steps or
epoch (weights, optimiser, scheduler, generator, global RNGs, the epoch's batches and
partial sums, the defense's ``state_dict()``); a training that finds a checkpoint
continues from it as if never stopped.

**Several processes.** Under ``torch.distributed`` (``benchbench.distributed``) with W
processes, one training runs on all of them, as torchreid's DDP training does. Every rank
draws the same P x K batches (the same seed: the sampler's Python/NumPy draws and the
augmentation's torch draws are the same on every rank), augments the whole batch, and
keeps its share *by identity* (``_share``): P/W identities with all their K images, so
``ids_per_batch`` must be a multiple of W, and batch-hard mining stays per rank with
positives in every slice. Every rank starts from rank 0's model (broadcast), and every
optimiser step follows the gradient averaged over the ranks (``TrainState.optimize``; the
meta-update's virtual step too, ``benchbench.reid.meta``). The model is not wrapped in
``DistributedDataParallel``: the meta-update takes its gradients with
``torch.autograd.grad``, which DDP's reducer (hooked on gradient accumulation into
``.grad``) never sees, and makes two forward passes per step, one at virtually stepped
weights; so ``distributed.average_gradients`` does what the reducer does, one flattened
all-reduce per optimiser step, for every defense alike. The logged losses are the mean
over the ranks, the same on every rank; rank 0 alone writes the log, and checkpoints
(``Checkpointer.save``: every rank waits for the commit and may load it).

BatchNorm: on CPU (gloo) each rank normalises its slice with the slice's statistics, as
DDP does without SyncBatchNorm (torch's SyncBatchNorm runs on CUDA only); on CUDA the
trainer converts the model's BatchNorms to ``torch.nn.SyncBatchNorm``, which normalises
with the global batch's statistics (a one-liner; not exercised by the tests, which run
on CPU). After every step the floating-point buffers (running mean and variance) are
averaged over the ranks (``distributed.average_buffers``), so the replicas agree at every
step (for the eval-mode attacks, a checkpoint, the final model): the running mean moves
as one process's would from the same activations, the running variance by the mean of
the slices' variances (without the spread between slices).

Equal to a one-process run on the same global batches: the batches and their
augmentation, the initial weights, the sampler's and augmentation's RNG streams. Not
equal: the forward pass on CPU (BatchNorm's per-slice statistics), so every loss, even a
mean over rows like the cross-entropy; batch-hard triplet mining and every other
batch-level term (positives and negatives from the rank's P/W identities); the training
attacks (crafted on the slice: FNA's pull guide is the slice's, and each rank's attack
generator draws a slice's random starts, so row i of every slice starts alike); and
``state.generator``'s stream wherever a hook's draws depend on the batch's size
(dddefense's identity split: each rank splits its own identities). Hooks' draws are the
same on every rank. One process runs exactly the code and gets exactly the numbers it
did before several processes were possible.
"""
from __future__ import annotations

import functools
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torchvision.transforms import v2

from benchbench import distributed
from benchbench.checkpoint import Checkpointer, global_rng_state, set_global_rng_state
from benchbench.numerics import isolated_rng, require_finite, require_finite_weights
from benchbench.precision import Precision
from benchbench.progress import progress
from benchbench.reid.data import ImageSet
from benchbench.reid.models import ReidNet, build_model

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchreid.reid.data.sampler import RandomIdentitySampler
    from torchreid.reid.losses import CrossEntropyLoss, TripletLoss

if TYPE_CHECKING:
    from torchattacks.attack import Attack

    from benchbench.reid.api import ReidDefense
    from benchbench.stages import Stage, StageCache


@dataclass(frozen=True)
class TrainConfig:
    """The training protocol (the task's params): the same for every defense."""

    arch: str = "resnet18"
    weights: str | None = None
    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 5e-4
    ids_per_batch: int = 8
    images_per_id: int = 4
    margin: float = 0.3
    ce_weight: float = 1.0
    triplet_weight: float = 1.0
    pad: int = 4
    flip: bool = True


@dataclass
class Batch:
    """A training batch: [0, 1] images, class labels (0..C-1) and cameras."""

    images: torch.Tensor
    pids: torch.Tensor
    camids: torch.Tensor

    def subset(self, mask: torch.Tensor) -> "Batch":
        return Batch(self.images[mask], self.pids[mask], self.camids[mask])

    def cat(self, other: "Batch") -> "Batch":
        return Batch(torch.cat([self.images, other.images]), torch.cat([self.pids, other.pids]),
                     torch.cat([self.camids, other.camids]))


@dataclass
class Output:
    logits: torch.Tensor
    features: torch.Tensor


@functools.lru_cache(maxsize=1)
def _attack_registry():
    from benchbench.registry import load_registry

    return load_registry()


class TrainState:
    """The live state of one training, handed to every defense hook."""

    def __init__(self, model: ReidNet, train: ImageSet, config: TrainConfig, seed: int,
                 cache: "StageCache | None" = None, data_key: str = "", device: str = "cpu",
                 data_root: Path | None = None, layout: str = "market1501", show_progress: bool = False,
                 reference: "Callable[[], Stage] | None" = None, precision: str = "fp32"):
        self.model, self.train, self.config, self.seed = model, train, config, seed
        self.precision = Precision(precision, device)  # the trainer runs each step under its autocast
        self._reference = reference
        # for stages a defense builds itself (e.g. a generator trained once per data set)
        self.cache, self.data_key, self.device, self.show_progress = cache, data_key, device, show_progress
        # the layout folder the training set was read from (None: in-memory data), for
        # defenses that write images next to it in the same layout (dddefense)
        self.data_root, self.layout = data_root, layout
        self.num_classes = model.num_classes
        self.epoch = self.step = 0
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(config.epochs, 1))
        self.generator = torch.Generator().manual_seed(seed)  # for a defense's own randomness
        self.ce = CrossEntropyLoss(self.num_classes, use_gpu=False, label_smooth=True)
        self.triplet = TripletLoss(margin=config.margin)

    def reference_stage(self) -> "Stage":
        """The plain (``none`` defense) model of the same data, task and seed: the very stage
        the ``none`` cell trains, fetched from the cache or built (a defense that needs a
        model of the real data, e.g. to vet generated images, reuses the grid's)."""
        if self._reference is None:
            from benchbench.errors import ConfigError

            raise ConfigError("this defense needs the plain model of the same data and seed: run it "
                              "through the reid-adversarial task (which provides it)")
        return self._reference()

    def forward(self, batch: Batch) -> Output:
        logits, features = self.model(batch.images)
        return Output(logits, features)

    def standard_loss_terms(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        """Label-smoothed CE on the classifier + hard-margin batch-hard triplet on the embedding."""
        return {"ce": self.config.ce_weight * self.ce(out.logits, batch.pids),
                "triplet": self.config.triplet_weight * self.triplet(out.features, batch.pids)}

    def optimize(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step on the sum of ``terms``, along the gradient averaged over the
        ranks; returns the terms' values (this rank's) for the log."""
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward(sum(terms.values()))
        distributed.average_gradients(self.model.parameters())
        self.precision.step(self.optimizer)
        return {k: float(v.detach()) for k, v in terms.items()}

    def build_attack(self, name: str, params: dict[str, Any] | None = None,
                     model: torch.nn.Module | None = None) -> "Attack":
        """A registered ReID attack bound to the model being trained (for adversarial
        training or an attack pool), or to ``model`` (a fixed teacher), seeded from this run."""
        cls = _attack_registry().get("attack", "reid", name)
        return cls(params or {}).build(self.model if model is None else model, seed=self.seed)


def _batches(train: ImageSet, config: TrainConfig) -> Iterator[torch.Tensor]:
    """Index batches of P identities x K images from torchreid's sampler."""
    source = [(i, int(p), int(c), 0) for i, (p, c) in enumerate(zip(train.pids, train.camids))]
    size = config.ids_per_batch * config.images_per_id
    order = list(RandomIdentitySampler(source, size, config.images_per_id))
    for start in range(0, len(order) - size + 1, size):
        yield torch.tensor(order[start:start + size])


def _share(pids: torch.Tensor) -> torch.Tensor:
    """The rows of a global batch (identities ``pids``) this rank trains on: the rank's
    consecutive share of the batch's identities, in their order of appearance, with all
    their images (every row under one process)."""
    ids = torch.tensor(list(dict.fromkeys(pids.tolist())))
    return torch.isin(pids, ids[distributed.shard(len(ids), "ids_per_batch")])


def train(defense: "ReidDefense", train_set: ImageSet, num_classes: int, config: TrainConfig, seed: int,
          cache: "StageCache | None" = None, data_key: str = "", show_progress: bool = True,
          log_path: Path | None = None, device: str = "cpu", data_root: Path | None = None,
          layout: str = "market1501", reference: "Callable[[], Stage] | None" = None,
          precision: str = "fp32", checkpoints: Checkpointer | None = None) -> ReidNet:
    """Train a model with ``defense``'s hooks; return it in eval mode. ``reference``
    returns the plain model's stage (``TrainState.reference_stage``). ``precision``: fp32,
    bf16 or fp16 (``benchbench.precision``); ``checkpoints``: save the whole state as
    training goes and start from the folder's checkpoint if there is one (the same
    weights as an uninterrupted run). Under several processes every rank calls it alike
    and trains its share of each batch (see the module doc)."""
    distributed.shard(config.ids_per_batch, "ids_per_batch")  # refuse a batch the ranks cannot split, first
    with isolated_rng(seed):
        model = build_model(config.arch, num_classes, config.weights).to(device).train()
        if distributed.world_size() > 1 and device.startswith("cuda"):
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the global batch's statistics
        run = TrainState(model, train_set, config, seed, cache, data_key, device, data_root, layout,
                       show_progress, reference, precision)
        run.train = defense.prepare_data(train_set, run)
        defense.on_train_start(run)
        augment = v2.Compose([v2.RandomCrop(tuple(train_set.images.shape[-2:]), padding=config.pad),
                              v2.RandomHorizontalFlip(0.5 if config.flip else 0.0)])
        history: list[dict] = []
        first_epoch, in_epoch = 0, None
        resume = checkpoints.load() if checkpoints is not None else None
        if resume is not None:
            model.load_state_dict(resume["model"])
            run.optimizer.load_state_dict(resume["optimizer"])
            run.scheduler.load_state_dict(resume["scheduler"])
            run.precision.load_state_dict(resume["precision"])
            run.generator.set_state(resume["generator"])
            defense.load_state_dict(resume["defense"])
            set_global_rng_state(resume["rng"])
            history, run.step, first_epoch, in_epoch = (resume[k] for k in ("history", "step", "epoch", "in_epoch"))
        distributed.broadcast_module(model)

        def checkpoint(epoch: int, position: dict | None) -> None:
            checkpoints.save({  # rank 0 writes it (the ranks' states agree); every rank may load it
                "model": model.state_dict(), "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(), "precision": run.precision.state_dict(),
                "generator": run.generator.get_state(), "rng": global_rng_state(), "defense": defense.state_dict(),
                "history": history, "step": run.step, "epoch": epoch, "in_epoch": position})

        for epoch in progress(range(first_epoch, config.epochs), f"train {defense.name} (seed {seed})",
                              enabled=show_progress and distributed.is_main()):
            run.epoch = epoch
            if in_epoch is None:
                start, sums, n = time.perf_counter(), {}, 0
                defense.on_epoch_start(run)
                batches = list(_batches(run.train, config))
            else:  # resumed inside this epoch: its batches and partial sums were saved
                start = time.perf_counter() - in_epoch["seconds"]
                sums, n, batches, in_epoch = in_epoch["sums"], in_epoch["n"], list(in_epoch["batches"]), None
            for index in batches[n:]:
                images = torch.stack([augment(img) for img in run.train.images[index]]).float().div_(255)
                mine = _share(run.train.pids[index])
                batch = Batch(images[mine].to(device), run.train.pids[index][mine].to(device),
                              run.train.camids[index][mine].to(device))
                with run.precision.autocast():
                    terms = defense.train_step(batch, run)
                terms = distributed.mean_over_ranks(terms)
                distributed.average_buffers(model)
                require_finite(terms, f"ReID loss at epoch {epoch} step {run.step}")
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                run.step, n = run.step + 1, n + 1
                if checkpoints is not None and checkpoints.due(run.step):
                    checkpoint(epoch, {"batches": torch.stack(batches), "n": n, "sums": sums,
                                       "seconds": time.perf_counter() - start})
            run.scheduler.step()
            history.append({"epoch": epoch, "seconds": round(time.perf_counter() - start, 2), "steps": n,
                            **{k: round(v / max(n, 1), 5) for k, v in sums.items()}})
            if checkpoints is not None and checkpoints.due(epoch_end=True):
                checkpoint(epoch + 1, None)
        defense.on_train_end(run)
    require_finite_weights(model, f"ReID model ({defense.name}, seed {seed})")
    if log_path is not None and distributed.is_main():
        log = {"config": asdict(config), "defense": defense.identity(), "seed": seed, "epochs": history}
        if run.precision.reduced:
            log["precision"] = precision
        log_path.write_text(json.dumps(log, indent=1))
    return model.eval()
