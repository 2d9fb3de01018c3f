"""Caption re-matching: a FIFO pool of caption features, the rules that pick a new
caption for an image from it, the record of what was picked and its diagnostics, and
the training loop RoCLIP and OTCCLIP share (``PoolRematchingDefense``).

RoCLIP (``model/src/memory_bank.py``, lightly's ``NNMemoryBankModule``) keeps the
caption embeddings of the most recent batches in a first-in-first-out pool and, every
K epochs, pairs each image with its nearest pooled caption (argmax cosine; the pool as
it was *before* the batch is added). Poisoned captions are rare, so an image whose own
caption was poisoned is very likely to be matched with a clean one. OTCCLIP (our
reading, ALGORITHMS.md) shortlists the top-k pooled captions by that same global
similarity and re-ranks them by ``cos(global) - lambda * d_OT(patch tokens, word
tokens)`` so that captions with the right words in the wrong places lose.

The pool stores *which training row* each caption came from, so defenses can record
their assignments (``MatchLog``) and the ``rematch`` evaluator can say how many
poisoned pairs were broken up and how many clean pairs were wrongly re-paired.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import Tensor

from benchbench import distributed
from benchbench.clip.api import ClipDefense
from benchbench.clip.augment import NO_AUGMENTATION, AugmentParams, augment_batch
from benchbench.clip.model import ClipModel, Features, contrastive_loss
from benchbench.clip.trainer import Batch, PairSet, TrainConfig, TrainState
from benchbench.ot import candidate_ot_distances

MATCHES_FILE = "rematch.safetensors"


class FeatureQueue:
    """A first-in-first-out pool of the last ``capacity`` feature vectors, each with the
    training row it came from and, optionally, its token set and token mask.

    Entries are stored detached: they are targets to match against, not to train.
    Storage is allocated at the first ``push`` (shapes come from the data).
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._size = 0
        self._next = 0  # slot the next entry goes to (the oldest once full)
        self._features: Tensor | None = None
        self._rows: Tensor | None = None
        self._tokens: Tensor | None = None
        self._mask: Tensor | None = None

    def __len__(self) -> int:
        return self._size

    def state_dict(self) -> dict:
        """The pool's slots and fill position, for a checkpoint."""
        return {"capacity": self.capacity, "size": self._size, "next": self._next, "features": self._features,
                "rows": self._rows, "tokens": self._tokens, "mask": self._mask}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"a checkpointed pool of {state['capacity']} cannot fill a pool of {self.capacity}")
        self._size, self._next = state["size"], state["next"]
        self._features, self._rows, self._tokens, self._mask = (state[k] for k in ("features", "rows", "tokens",
                                                                                  "mask"))

    def push(self, features: Tensor, rows: Tensor, tokens: Tensor | None = None,
             mask: Tensor | None = None) -> None:
        """Add a batch: (B, D) features, (B,) rows, optional (B, L, D) tokens and (B, L) mask.
        When full, the oldest entries are overwritten; of a batch larger than the pool only
        its last ``capacity`` entries are kept."""
        features, rows = features.detach()[-self.capacity:], rows.detach()[-self.capacity:]
        if self._features is None:
            self._features = features.new_zeros((self.capacity, *features.shape[1:]))
            self._rows = torch.full((self.capacity,), -1, dtype=torch.long, device=rows.device)
            if tokens is not None:
                self._tokens = tokens.new_zeros((self.capacity, *tokens.shape[1:]))
                self._mask = torch.zeros((self.capacity, tokens.shape[1]), dtype=torch.bool,
                                         device=tokens.device)
        if (tokens is None) != (self._tokens is None):
            raise ValueError("push tokens on every call or on none")
        slots = (self._next + torch.arange(len(features))) % self.capacity
        self._features[slots] = features
        self._rows[slots] = rows.long()
        if tokens is not None:
            self._tokens[slots] = tokens.detach()[-self.capacity:]
            self._mask[slots] = (torch.ones(tokens.shape[:2], dtype=torch.bool) if mask is None
                                 else mask.detach())[-self.capacity:]
        self._next = int(slots[-1] + 1) % self.capacity
        self._size = min(self.capacity, self._size + len(features))

    @property
    def features(self) -> Tensor:
        """(len, D) features of the filled slots (slot order, not age order)."""
        return self._filled(self._features)

    @property
    def rows(self) -> Tensor:
        """(len,) training row of each entry."""
        return self._filled(self._rows)

    @property
    def tokens(self) -> Tensor | None:
        return None if self._tokens is None else self._filled(self._tokens)

    @property
    def mask(self) -> Tensor | None:
        return None if self._mask is None else self._filled(self._mask)

    def _filled(self, t: Tensor | None) -> Tensor:
        if t is None:
            raise ValueError("the pool is empty")
        return t[: self._size]


def nearest(queries: Tensor, keys: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
    """Top-``k`` keys of each query by cosine similarity: ((B, k) similarities, (B, k) indices)."""
    sims = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T
    return sims.topk(min(k, keys.shape[0]), dim=1)


def ot_rerank(image_tokens: Tensor, shortlist_sims: Tensor, shortlist: Tensor, pool: FeatureQueue,
              lam: float, reg: float, max_iter: int = 100, tol: float = 1e-4) -> tuple[Tensor, Tensor]:
    """OTCCLIP's matching score over each image's shortlist of pooled captions.

    ``s = cos(global image, global caption) - lam * d_OT`` where ``d_OT`` is the entropic
    OT distance (cost ``1 - cos``) between the image's (B, P, D) patch tokens and the
    caption's word tokens, with uniform marginals over the tokens the pool's masks keep
    (padding is always masked; OTCCLIP's ``text_marginals`` may mask more). ``shortlist`` (B, k)
    indexes the pool, ``shortlist_sims`` are their global cosines. Returns the (B, k)
    scores and the (B,) pool index of each image's best candidate.
    """
    if pool.tokens is None:
        raise ValueError("the pool holds no token sets; push tokens to re-rank with OT")
    d_ot = candidate_ot_distances(image_tokens.detach(), pool.tokens, shortlist, reg, y_mask=pool.mask,
                                  max_iter=max_iter, tol=tol)
    scores = shortlist_sims - lam * d_ot
    return scores, shortlist.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)


class MatchLog:
    """Which caption row each image row was trained with, per matching epoch.

    ``add`` takes one batch; ``save`` writes ``rematch.safetensors`` (int64 tensors
    ``epoch``, ``image_row``, ``caption_row`` and, when given, ``caption_row_global``:
    what the global nearest neighbour alone would have picked, so one run measures OT
    re-ranking against plain global matching on the same embeddings).
    """

    def __init__(self) -> None:
        self._parts: dict[str, list[Tensor]] = {"epoch": [], "image_row": [], "caption_row": [],
                                                "caption_row_global": []}

    def add(self, epoch: int, image_rows: Tensor, caption_rows: Tensor,
            caption_rows_global: Tensor | None = None) -> None:
        n = len(image_rows)
        self._parts["epoch"].append(torch.full((n,), epoch, dtype=torch.long))
        self._parts["image_row"].append(image_rows.detach().long().cpu())
        self._parts["caption_row"].append(caption_rows.detach().long().cpu())
        if caption_rows_global is not None:
            self._parts["caption_row_global"].append(caption_rows_global.detach().long().cpu())

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts["epoch"])

    def state_dict(self) -> dict[str, Tensor]:
        """The assignments so far, one tensor per column, for a checkpoint."""
        return {name: torch.cat(parts) for name, parts in self._parts.items() if parts}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._parts = {name: [state[name]] if name in state else [] for name in self._parts}

    def tensors(self) -> dict[str, Tensor]:
        out = {name: torch.cat(parts) for name, parts in self._parts.items() if parts}
        if "caption_row_global" in out and len(out["caption_row_global"]) != len(out["epoch"]):
            raise ValueError("caption_row_global was given for some batches only")
        return out

    def save(self, directory: str | Path) -> None:
        if len(self):
            save_file(self.tensors(), str(Path(directory) / MATCHES_FILE))


def load_matches(directory: str | Path) -> dict[str, Tensor] | None:
    """The assignments a re-matching defense saved next to its model, or None."""
    path = Path(directory) / MATCHES_FILE
    return load_file(str(path)) if path.is_file() else None


# -- the shared defense loop ---------------------------------------------------------------
#: Plain CLIP epochs before a CPU-preset defense first acts (re-matches or splits): the
#: epoch by which the plain model of the default schedule meets the world's retrieval
#: principle C5 on every measured seed (nearest caption right for >= 0.6 of clean images;
#: 10, 11 and 8 on seeds 0-2, ``benchmarks/world_clip.py``). Acting earlier pairs images
#: with captions the model cannot retrieve yet. Chosen on plain models only.
CPU_WARM_UP_EPOCHS = 11
#: The ``default`` (CPU) preset of every pool re-matching defense: the warm-up above, and
#: no augmentation (SimCLR crops and EDA alone keep the 32 px model near chance,
#: ``benchmarks/clip_defense_budget.py``). SafeCLIP's first split waits as long.
CPU_WARM_UP = {"first_match_epoch": CPU_WARM_UP_EPOCHS + 1, **NO_AUGMENTATION}


class PoolParams(AugmentParams):
    """Params of pool re-matching defenses (RoCLIP, OTCCLIP)."""

    pool_size: int = Field(21845, ge=1, description="captions in the FIFO pool (RoCLIP's default; scale it with "
                                                     "the data: the pool should hold many captions per concept)")
    match_every: int = Field(2, ge=1, description="K: re-match in epochs whose 1-based number is a multiple of K")
    first_match_epoch: int = Field(2, ge=1, description="no re-matching before this (1-based) epoch (warm-up)")
    match_last_epoch: bool = Field(True, description="may the last epoch be a matching epoch (RoCLIP: yes, its 24 "
                                                     "epochs with K = 2 end on one); False makes it plain CLIP")
    rematch: Literal["all", "suspect"] = Field(
        "all", description="which images a matching epoch re-matches: 'all' (RoCLIP's rule) or 'suspect' (our "
                           "reading: the suspect_fraction of each batch with the lowest own-pair cosine; the rest "
                           "keep their own captions)")
    suspect_fraction: float = Field(0.1, gt=0, le=1, description="with rematch='suspect': the share of each batch "
                                                                  "re-matched (our reading)")


@dataclass(frozen=True)
class Rematched:
    """What a matching step did to one batch: ``rows`` (batch positions re-matched) got
    the captions in pool slots ``slots``; every other image kept its own caption."""

    rows: Tensor
    slots: Tensor


class PoolRematchingDefense(ClipDefense):
    """RoCLIP's training loop, shared by OTCCLIP: every batch is augmented (images and
    EDA captions); in a matching epoch each re-matched image is paired with the caption
    ``match`` picks from the pool as it was before the batch, and the CLIP loss uses that
    pooled (detached) caption embedding, as RoCLIP's ``get_loss`` does; then the batch's
    captions enter the pool.

    RoCLIP's ``get_loss`` (``model/src/train.py``) also computes the image-to-own-caption
    logits in a matching epoch but adds them with weight 0, so its text tower only learns
    in plain epochs; here the own captions of re-matched images are left out of the loss
    too (the same gradients). With ``rematch='suspect'`` only the lowest-similarity share
    of each batch is re-matched, and the others' own (live) caption embeddings stay in
    the loss.

    On several processes (``benchbench.distributed``) each rank matches its slice of the
    batch, and the pool and the match log receive every rank's rows in rank order: every
    rank holds the pool, and rank 0 the log, of one process training on the whole batch.

    Departure from RoCLIP's code: the pool is filled in plain epochs too, not only in
    matching ones, so the first batch of a matching epoch meets recent real captions
    rather than the random vectors lightly's memory bank starts with. Filling starts in
    the epoch before the first matching one when one epoch's captions fill the pool
    (``pool_fill_epoch``: entries from earlier epochs would be overwritten unread), so
    the epochs before it are plain CLIP and, without augmentation, are shared with the
    ``none`` model's training (``standard_prefix``).
    """

    Params = PoolParams
    fill_from = 0  # the first epoch whose captions enter the pool (``train`` sets it)

    def train(self, model: ClipModel, config: TrainConfig, data: PairSet, clean: PairSet | None = None,
              poison: Tensor | None = None) -> list[dict]:
        self.pool = FeatureQueue(self.params.pool_size)
        self.matches = MatchLog()
        self.fill_from = self.pool_fill_epoch(config, len(data))
        return super().train(model, config, data, clean=clean, poison=poison)

    def pool_fill_epoch(self, config: TrainConfig, n_pairs: int) -> int:
        """The first (0-based) epoch whose captions enter the pool: the one before the first
        matching epoch if one epoch's captions fill the pool, else 0."""
        p = self.params
        first_match = p.first_match_epoch + (-p.first_match_epoch % p.match_every)  # 1-based
        if p.pool_size > (n_pairs // config.batch_size) * config.batch_size:
            return 0
        return max(0, min(first_match - 2, config.epochs))

    def standard_prefix(self, config: TrainConfig, n_pairs: int) -> int:
        """The epochs before the pool fills are plain CLIP unless batches are augmented (or a
        subclass adds loss terms, as OTCCLIP's OT losses from the first epoch)."""
        p = self.params
        plain = p.identity_views and self.trains_as(PoolRematchingDefense, "extra_loss")
        return self.pool_fill_epoch(config, n_pairs) if plain else 0

    def matching(self, state: TrainState) -> bool:
        """Is this a matching epoch: 1-based epoch >= ``first_match_epoch`` and a multiple
        of ``match_every`` (RoCLIP's ``epoch % break_epoch == 0``), and not the phase's
        last epoch when ``match_last_epoch`` is off."""
        p, epoch = self.params, state.global_epoch + 1
        if not p.match_last_epoch and state.epoch == state.phase.epochs - 1:
            return False
        return epoch >= p.first_match_epoch and epoch % p.match_every == 0

    def augment(self, batch: Batch, state: TrainState) -> Batch:
        return augment_batch(batch, state, self.params)

    def suspects(self, features: Features) -> Tensor:
        """Batch positions to re-match: all (RoCLIP), or the ``suspect_fraction`` (at least
        one) with the lowest cosine between the image and its own caption."""
        n = len(features.image)
        if self.params.rematch == "all":
            return torch.arange(n)
        own = (features.image * features.text).sum(dim=1).detach()
        k = max(1, round(self.params.suspect_fraction * n))
        return own.topk(k, largest=False).indices.sort().values

    def loss(self, batch: Batch, features: Features, state: TrainState) -> dict[str, Tensor]:
        text, rematched = features.text, None
        if self.matching(state) and len(self.pool):
            rows = self.suspects(features)
            with state.timed("match"):
                slots, global_slots = self.match(features, rows)
            rematched = Rematched(rows, slots)
            text = features.text.index_put((rows,), self.pool.features[slots])
            self.matches.add(state.global_epoch, *distributed.gather_rows(
                batch.index, self._caption_rows(batch, rows, slots),
                None if global_slots is None else self._caption_rows(batch, rows, global_slots)))
        terms = {"clip": contrastive_loss(features.image, text, features.logit_scale)}
        terms.update(self.extra_loss(batch, features, state, rematched))
        if state.global_epoch >= self.fill_from:
            self.pool.push(*distributed.gather_rows(features.text, batch.caption_index, features.text_tokens,
                                                    features.text_mask))
        return terms

    def _caption_rows(self, batch: Batch, rows: Tensor, slots: Tensor) -> Tensor:
        """The caption row each image of the batch was trained with."""
        return batch.caption_index.index_put((rows,), self.pool.rows[slots].to(batch.caption_index.dtype))

    def match(self, features: Features, rows: Tensor) -> tuple[Tensor, Tensor | None]:
        """Pool slot chosen for each image at batch positions ``rows`` and (for logging)
        the global nearest neighbour's slot when the rule is not the global one. RoCLIP:
        argmax cosine."""
        _, index = nearest(features.image[rows].detach(), self.pool.features, k=1)
        return index[:, 0], None

    def extra_loss(self, batch: Batch, features: Features, state: TrainState,
                   rematched: Rematched | None) -> dict[str, Tensor]:
        """More loss terms; ``rematched`` says which images were paired with which pool
        slots in a matching epoch (None: all own captions)."""
        return {}

    def save_artifacts(self, directory: Path) -> None:
        self.matches.save(directory)

    def state_dict(self) -> dict:
        return {"pool": self.pool.state_dict(), "matches": self.matches.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.pool.load_state_dict(state["pool"])
        self.matches.load_state_dict(state["matches"])


# -- diagnostics ------------------------------------------------------------------------
def mentioned_classes(caption: str, classes: Sequence[str]) -> frozenset[str]:
    """The class names ``caption`` mentions as whole words (case-insensitive)."""
    text = caption.lower()
    return frozenset(c for c in classes if re.search(rf"\b{re.escape(c.lower())}\b", text))


def rematch_metrics(matches: dict[str, Tensor], is_poison: Tensor, captions: Sequence[str],
                    classes: Sequence[str]) -> dict[str, float]:
    """How well the last matching epoch's assignments separated poisoned pairs.

    Training rows carry no class label, so a pair's meaning is the set of evaluation
    classes its caption names (the words zero-shot classification relies on too). An
    image is *re-matched* when the caption it was trained with names other classes than
    its own caption. For a poisoned pair that breaks the poison (the adversarial class
    is gone); for a clean pair it is a wrong re-pairing. Clean pairs whose caption names
    no class are left out (nothing to compare).

    Returns ``false_rematch_rate`` (re-matched clean pairs / clean pairs) and, when the
    training set holds poisoned rows, ``recall`` (re-matched poisoned pairs / poisoned
    pairs) and ``precision`` (poisoned among re-matched pairs, when any were). With a
    ``caption_row_global`` record the same three are also given for the global
    nearest-neighbour choice, suffixed ``_global``.
    """
    last = matches["epoch"] == matches["epoch"].max()
    image_rows = matches["image_row"][last]
    own = [mentioned_classes(captions[i], classes) for i in image_rows.tolist()]
    poisoned = is_poison.bool()[image_rows]
    clean = ~poisoned & torch.tensor([bool(c) for c in own])
    out: dict[str, float] = {}
    for key, suffix in (("caption_row", ""), ("caption_row_global", "_global")):
        if key not in matches:
            continue
        picked = matches[key][last].tolist()
        changed = torch.tensor([mentioned_classes(captions[j], classes) != c for j, c in zip(picked, own)])
        if clean.any():
            out[f"false_rematch_rate{suffix}"] = changed[clean].float().mean().item()
        if poisoned.any():
            out[f"recall{suffix}"] = changed[poisoned].float().mean().item()
            flagged = changed & (clean | poisoned)
            if flagged.any():
                out[f"precision{suffix}"] = (flagged & poisoned).sum().item() / flagged.sum().item()
    return out
