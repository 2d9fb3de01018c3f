"""Defense ``none`` for the ReID track: standard training, every trainer hook left as is
(label-smoothed CE + hard-margin batch-hard triplet on identity-balanced batches)."""
from __future__ import annotations

import benchbench
from benchbench.reid.api import ReidDefense

__version__ = "1.0"


class StandardTraining(ReidDefense):
    name = "none"
    description = "Standard training: cross-entropy + batch-hard triplet, no defense"


@benchbench.hookimpl
def benchbench_defenses():
    return [StandardTraining]
