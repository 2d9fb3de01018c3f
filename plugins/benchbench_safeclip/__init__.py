"""SafeCLIP (Yang et al., ICML 2024): train CLIP only on pairs it believes are safe.

As in BigML-CS-UCLA/SafeCLIP (``src/main.py``, ``src/samplers.py``):

1. ``inmodal_warmup`` epochs of unimodal contrastive learning (NNCLR-style, a
   nearest-neighbour memory bank per modality) on all pairs: image and caption encoders
   learn their own modality without ever seeing the (possibly poisoned) pairing;
2. ``multimodal_warmup`` epoch(s) of the CLIP loss on all pairs at a very low learning
   rate (``warmup_lr_factor`` x lr): just enough to align the towers;
3. then every epoch: the cosine similarity of every pair, a 2-component Gaussian mixture
   on them (``GaussianMixture(2, random_state=0)``, the clean component is the one with
   the larger mean), and a split: the first filtering epoch keeps the pairs whose clean
   probability is >= ``threshold`` (0.9) as *safe*; each later epoch keeps the top
   ``ratio`` of pairs by clean probability, ``ratio`` starting at the first epoch's safe
   fraction and growing by ``ratio_step`` (0.01) per epoch up to ``ratio_cap`` (0.85).
   Risky pairs get the unimodal loss, safe pairs the CLIP loss on augmented views
   ("cross-augmented": image view 1 with caption view 2 and caption view 1 with image
   view 2).
"""
from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture


def clean_probability(similarities: np.ndarray) -> np.ndarray:
    """P(clean) of each pair: the posterior of the larger-mean component of a 2-component
    Gaussian mixture fitted to the pairs' cosine similarities."""
    sims = np.asarray(similarities, dtype=np.float64).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, random_state=0).fit(sims)
    return gmm.predict_proba(sims)[:, int(np.argmax(gmm.means_))]


def safe_ratio(first_ratio: float, epochs_since_first: int, step: float, cap: float) -> float:
    """The fraction of pairs kept as safe ``epochs_since_first`` filtering epochs after the
    first one (which used ``first_ratio``, the share above the probability threshold)."""
    if epochs_since_first == 0:
        return first_ratio
    return min(first_ratio + step * epochs_since_first, cap)


def split_safe(similarities: np.ndarray, probabilities: np.ndarray, ratio: float | None,
               threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(safe rows, risky rows). ``ratio=None``: safe = probability >= ``threshold``;
    otherwise the top ``ratio`` of rows by clean probability (ties by similarity)."""
    order = np.lexsort((-np.asarray(similarities), -np.asarray(probabilities)))
    if ratio is None:
        n_safe = int((probabilities >= threshold).sum())
    else:
        n_safe = int(ratio * len(order))
    return np.sort(order[:n_safe]), np.sort(order[n_safe:])
