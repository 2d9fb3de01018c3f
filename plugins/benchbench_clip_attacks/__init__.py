"""Built-in CLIP data attacks: the clean reference, targeted poisoning and its adaptive
variants (paraphrase flooding, fine-grained mimicry), and the backdoors BadNets, Blended,
SIG, WaNet and label-consistent BadNets."""
import benchbench
from benchbench.clip.api import NoPoison
from benchbench_clip_attacks.adaptive import FineGrainedMimicry, ParaphraseFlood
from benchbench_clip_attacks.targeted import TargetedPoison
from benchbench_clip_attacks.triggers import SIG, BadNets, Blended, LabelConsistent, WaNet


@benchbench.hookimpl
def benchbench_attacks():
    return [NoPoison, TargetedPoison, ParaphraseFlood, FineGrainedMimicry, BadNets, Blended, SIG, WaNet,
            LabelConsistent]
