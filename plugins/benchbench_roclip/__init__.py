"""RoCLIP (Yang et al., NeurIPS 2023): break poisoned pairs by re-matching each image
with its nearest caption in a pool of recent captions.

Read from BigML-CS-UCLA/RoCLIP (``model/src/train.py``, ``memory_bank.py``,
``parser.py``, ``utils/augment_image.py``): a FIFO pool of caption embeddings (21,845 by
default); in epochs 2, 4, 6... (``epoch % break_epoch == 0`` with 1-based epochs) the
loss is CLIP's InfoNCE between each image and its nearest pooled caption (argmax
cosine, pool before the batch, the pooled embedding detached: the text tower only
learns in the other epochs), then the batch's captions join the pool; other epochs are
plain CLIP. Images get the SimCLR augmentations and captions EDA (``cross_aug``).

Defaults from that code: every image is re-matched in a matching epoch
(``rematch='all'``; ``'suspect'`` is our variant, see ``PoolParams``); the last epoch may
be a matching one (``match_last_epoch=True``: ``main.py`` runs epochs 1..24 with
``break_epoch=2``, so epoch 24 matches); ``get_loss`` computes the image-to-own-caption
logits in a matching epoch but adds them with weight ``0``, so the own captions give no
gradient there (here they are left out of the loss: the same gradients).
The loop lives in the kit (``benchbench.clip.rematch.PoolRematchingDefense``) because
OTCCLIP builds on it; this module is RoCLIP's defaults.
"""
from __future__ import annotations

from typing import ClassVar

import benchbench
from benchbench.clip.rematch import CPU_WARM_UP, PoolRematchingDefense


class RoCLIP(PoolRematchingDefense):
    name = "roclip"
    version = "3"  # 2: the CPU warm-up re-chosen on world 2 (CPU_WARM_UP_EPOCHS); 3: the pool fills from the
    # epoch before the first matching one (PoolRematchingDefense.pool_fill_epoch)
    description = "RoCLIP: every K epochs, train each image with its nearest caption in a FIFO caption pool"
    presets: ClassVar = {
        "smoke": {"pool_size": 128, "augment_group": 16, "match_every": 1, "first_match_epoch": 1},
        # 5,000 training pairs: a pool of 2,048 holds ~250 captions per shape; re-matching from epoch 6
        "default": {"pool_size": 2048, **CPU_WARM_UP},
        "paper": {},
    }


@benchbench.hookimpl
def benchbench_defenses() -> list[type]:
    return [RoCLIP]
