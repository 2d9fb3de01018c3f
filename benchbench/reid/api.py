"""The ReID track's refinement of the component contract.

- ``ReidInputAttack.build(model, seed)`` returns a ``torchattacks.attack.Attack``: called as
  ``attack(images, pids)`` on [0, 1] images, it returns adversarial images in [0, 1]
  within the L-inf ball. The attacks therefore also work outside benchbench. Before
  ``build`` the task calls ``prepare(AttackContext)`` with what an attack may need
  beyond the images it perturbs (the training set a universal perturbation is fitted
  on, the surrogate models of a black-box transfer), and ``perturbs()`` says which
  split the attack perturbs: the queries, or (Bai's main setting) the gallery, guided
  by the queries.
- ``ReidDefense`` is a set of trainer hooks. ``benchbench.reid.trainer.train`` calls
  them in this order, passing the live ``TrainState`` (model, optimizer, config, seed,
  stage cache, attack factory, standard losses):

  1. ``prepare_data(train, state) -> ImageSet`` once, before the sampler is built:
     add or re-weight training images (the debiasing defense adds generated images of
     rare identities and cameras here; ``state.cache`` keeps its generator trained once,
     and ``state.reference_stage()`` gives the plain model of the same data and seed,
     which it asks whether a generated image still shows its identity).
  2. ``on_train_start(state)`` once, with the model built (build attacks here), then per
     epoch ``on_epoch_start(state)``;
  3. per batch ``train_step(batch, state) -> {name: float}``. The default step is
     ``transform_batch`` (replace or augment the batch: adversarial training builds
     its attack with ``state.build_attack`` and swaps the batch for its adversarial
     version) -> ``state.forward`` -> ``loss_terms`` (default: ``state.standard_loss_terms``,
     CE + batch-hard triplet; return more or other terms) -> ``state.optimize``. A
     defense that needs its own optimisation step (a first-order meta-update over an
     identity split with ``Batch.subset`` and an attack pool from ``state.build_attack``)
     overrides ``train_step`` and still reuses ``state.forward`` and the loss terms;
  4. ``on_train_end(state)`` once (e.g. a fine-tuning phase).

  Under several processes (see ``benchbench.reid.trainer``) every rank runs every hook,
  and ``train_step`` gets the rank's share of the batch (P/W identities, all their
  images). A step must reach the optimiser through ``state.optimize`` or
  ``benchbench.reid.meta.first_order_meta_step`` (which average the gradients over the
  ranks) or average them itself (``benchbench.distributed.average_gradients``), and draw
  its randomness from ``state.generator`` or the global RNGs the same way on every rank,
  so the ranks stay in step.

  At inference, ``purifier(train, data_key, ctx)`` may return a ``benchbench.purify.Purifier``:
  the task then evaluates ``Purified(model, purifier)``, so the gallery's and the queries'
  features and every forward pass of the attack go through it (with ``attacker_gradient()
  == "oblivious"`` the attack is crafted on the bare model instead). A defense with
  ``test_time = True`` is not trained: the task uses the ``none`` defense's model.

- ``ReidEvaluator.evaluate(query, gallery)`` scores embeddings of the (clean or
  attacked) queries against the clean gallery.

This module stays torch-free at import so listing plugins does not load torch; the
types below are for annotations only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Literal

from benchbench.api import Defense, Evaluator, InputAttack

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torchattacks.attack import Attack

    from benchbench.context import RunContext
    from benchbench.purify import Purifier
    from benchbench.reid.data import ImageSet
    from benchbench.reid.trainer import Batch, Output, TrainState

TRACK = "reid"


class ReidInputAttack(InputAttack):
    """A test-time attack on query images (L-inf, [0, 1] images; epsilons in /255 units).

    ``uses_labels`` says whether the attack reads the identities of the images it
    perturbs (guided attacks do; self-guided ones do not): it is shown to users because
    it changes the threat model. A query attack never sees gallery labels; a gallery
    attack (param ``perturb: gallery``) reads the gallery's, to guide each gallery image
    by the queries of its identity, as in Bai et al.
    """

    track: ClassVar[str] = TRACK
    uses_labels: ClassVar[bool] = False

    def prepare(self, context: "AttackContext") -> None:
        """Called by the task once per cell before ``build``; most attacks need nothing."""

    def perturbs(self) -> Literal["query", "gallery"]:
        """The split the attack perturbs: its ``perturb`` param if it has one, else the queries."""
        return getattr(self.params, "perturb", "query")

    def build(self, model: "torch.nn.Module", seed: int = 0) -> "Attack":
        """The attack bound to ``model``; ``seed`` fixes its random start, if any."""
        raise NotImplementedError


@dataclass
class AttackContext:
    """What the task offers an attack beyond the images it perturbs.

    ``train``: the training split (identities disjoint from the test ones), on which a
    universal perturbation is fitted. ``surrogate(arch)``: the undefended model of
    architecture ``arch`` trained by this task's protocol on the same data and seed (a
    stage of the cache, trained once), for black-box transfer attacks.
    """

    train: "ImageSet"
    surrogate: Callable[[str], "torch.nn.Module"]


class ReidDefense(Defense):
    """Trains the track's model; override only the hooks the method changes."""

    track: ClassVar[str] = TRACK

    def prepare_data(self, train: "ImageSet", state: "TrainState") -> "ImageSet":
        return train

    def on_train_start(self, state: "TrainState") -> None:
        pass

    def on_epoch_start(self, state: "TrainState") -> None:
        pass

    def transform_batch(self, batch: "Batch", state: "TrainState") -> "Batch":
        return batch

    def loss_terms(self, out: "Output", batch: "Batch", state: "TrainState") -> dict[str, "torch.Tensor"]:
        return state.standard_loss_terms(out, batch)

    def train_step(self, batch: "Batch", state: "TrainState") -> dict[str, float]:
        batch = self.transform_batch(batch, state)
        return state.optimize(self.loss_terms(state.forward(batch), batch, state))

    def on_train_end(self, state: "TrainState") -> None:
        pass

    def purifier(self, train: "ImageSet", data_key: str, ctx: "RunContext") -> "Purifier | None":
        """The test-time transform in front of the model, or None. ``train`` and ``data_key``
        let it fit (and cache in ``ctx.cache``) a model of the training images; ``ctx.seed``
        seeds its randomness. Called once for the gallery and once for the queries, so a
        cached gallery leaves the queries' random draws as they were."""
        return None


@dataclass
class Embeddings:
    """Features of one split with the identities and cameras the protocol needs."""

    features: "torch.Tensor"
    pids: "torch.Tensor"
    camids: "torch.Tensor"


class ReidEvaluator(Evaluator):
    track: ClassVar[str] = TRACK

    def evaluate(self, query: Embeddings, gallery: Embeddings) -> dict[str, float]:
        raise NotImplementedError

    def evaluate_model(self, query: Embeddings, gallery: Embeddings, model_dir: "Path") -> dict[str, float]:
        """What the task calls, with the trained model's stage folder (its training log):
        ``evaluate`` by default; an evaluator of the training itself (``cost``) overrides it."""
        return self.evaluate(query, gallery)
