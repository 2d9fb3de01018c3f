"""Built-in CLIP data attacks: the clean reference, targeted poisoning, BadNets, Blended."""
import benchbench
from benchbench.clip.api import NoPoison
from benchbench_clip_attacks.targeted import TargetedPoison
from benchbench_clip_attacks.triggers import BadNets, Blended


@benchbench.hookimpl
def benchbench_attacks():
    return [NoPoison, TargetedPoison, BadNets, Blended]
