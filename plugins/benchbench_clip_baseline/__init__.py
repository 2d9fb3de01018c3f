"""The CLIP track's reference defense: standard CLIP training, no defense at all.

Every hook keeps ``ClipDefense``'s default, so this is exactly the shared trainer:
symmetric InfoNCE on the (possibly poisoned) pairs for the protocol's epochs.
"""
import benchbench
from benchbench.clip.api import ClipDefense


class StandardClip(ClipDefense):
    name = "none"
    description = "standard CLIP training (no defense)"


@benchbench.hookimpl
def benchbench_defenses():
    return [StandardClip]
