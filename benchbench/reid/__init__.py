"""Kit for the person-ReID adversarial track.

- ``api``: ``ReidInputAttack`` (builds a ``torchattacks.Attack``), ``ReidDefense``
  (trainer hooks), ``ReidEvaluator``, ``Embeddings``; torch-free at import.
- ``synthetic``: a deterministic pedestrian generator writing Market-1501's layout.
- ``data``: Market-1501 / DukeMTMC-reID folders via torchreid, held as uint8 tensors.
- ``models``: torchreid's model factory behind ImageNet normalisation ([0, 1] input).
- ``trainer``: CE + batch-hard triplet on identity-balanced batches, calling the hooks.
- ``losses``: batch-hard mining and the soft-margin triplet.
- ``attack``: the PGD loop and guide helpers every metric attack shares.
- ``diffusion``: the track's diffusers generator (an identity- and camera-conditioned
  UNet/DDPM trained on the training images), used by DDDefense's balancing and, trained
  unconditionally, by the DiffPure-style purifier.
- ``metrics``: vectorised mAP/CMC identical to torchreid's ``evaluate_rank``.
- ``task`` / ``pipeline``: the ``reid-adversarial`` task and its stages.
"""
