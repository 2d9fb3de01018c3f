"""The CLIP track's reference defense: standard CLIP training, no defense at all.

Every hook keeps ``ClipDefense``'s default, so this is exactly the shared trainer:
symmetric InfoNCE on the (possibly poisoned) pairs for the protocol's epochs. The class
lives in ``benchbench.clip.api`` (the task trains it as the plain model diagnostics
compare with); this plugin registers it.
"""
import benchbench
from benchbench.clip.api import StandardClip

__all__ = ["StandardClip"]


@benchbench.hookimpl
def benchbench_defenses():
    return [StandardClip]
