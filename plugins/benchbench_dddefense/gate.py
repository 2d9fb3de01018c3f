"""Identity-preservation gate: keep a generated image only if it still shows its person.

A CPU-sized generator often draws the right camera but the wrong person (other
clothing colours); such images teach the classifier a wrong identity, and balancing
with them lowered clean mAP. The gate asks a ReID model trained on the real images
alone (the plain ``none`` model of the same seed) whom a generated image shows:
the image is kept only if, among the training identities, its intended identity
ranks first by cosine similarity to the identity prototypes (the mean normalised
feature of each identity's real training images).

A cap then bounds the synthetic share of every identity (``max_synthetic_share`` of
its real + kept images): a rule that keeps each identity mostly real, not a
measurement.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def prototypes(features: torch.Tensor, pids: torch.Tensor, num_ids: int) -> torch.Tensor:
    """(num_ids, D) unit vectors: the normalised mean of each identity's normalised features
    (zero rows for identities without images)."""
    sums = torch.zeros(num_ids, features.shape[1]).index_add_(0, pids, F.normalize(features.float(), dim=1))
    return F.normalize(sums, dim=1)


def identity_gate(extract: Callable[[torch.Tensor], torch.Tensor], real_images: torch.Tensor,
                  real_pids: torch.Tensor, generated: torch.Tensor, intended: torch.Tensor,
                  num_ids: int) -> torch.Tensor:
    """Boolean mask over ``generated``: True where ``extract``'s feature of the image is
    closest (cosine) to the prototype of its ``intended`` identity."""
    if len(generated) == 0:
        return torch.zeros(0, dtype=torch.bool)
    protos = prototypes(extract(real_images), real_pids, num_ids)
    nearest = (F.normalize(extract(generated).float(), dim=1) @ protos.T).argmax(1)
    return nearest == intended


def cap_share(keep: torch.Tensor, intended: torch.Tensor, real_counts: torch.Tensor,
              max_share: float) -> torch.Tensor:
    """``keep`` with, per identity, only the first accepted images (in plan order) such that
    synthetic / (real + synthetic) <= ``max_share``."""
    out = torch.zeros_like(keep)
    taken = torch.zeros_like(real_counts)
    for k in torch.nonzero(keep).flatten().tolist():
        pid = int(intended[k])
        real = int(real_counts[pid])
        allowed = math.inf if max_share >= 1 else math.floor(real * max_share / (1 - max_share) + 1e-9)
        if taken[pid] < allowed:
            taken[pid] += 1
            out[k] = True
    return out


def summary(intended: torch.Tensor, passed: torch.Tensor, kept: torch.Tensor,
            names: dict[int, int]) -> dict:
    """JSON-able record of the gate: overall rates and, per identity (the data set's
    identity number), images generated, passing the gate and kept after the cap."""
    per_id = {}
    for label in intended.unique().tolist():
        rows = intended == label
        per_id[str(names[label])] = {"generated": int(rows.sum()), "passed_gate": int(passed[rows].sum()),
                                     "kept": int(kept[rows].sum())}
    n = max(len(intended), 1)
    return {"generated": len(intended), "passed_gate": int(passed.sum()), "kept": int(kept.sum()),
            "gate_acceptance_rate": round(float(passed.sum()) / n, 4),
            "acceptance_rate": round(float(kept.sum()) / n, 4), "per_identity": per_id}
