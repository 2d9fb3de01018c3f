"""Built-in CLIP evaluators: zero-shot accuracy, linear-probe accuracy, attack success rate,
training cost."""
import benchbench
from benchbench_clip_eval.asr import AttackSuccess
from benchbench_clip_eval.cost import ClipCost
from benchbench_clip_eval.linear_probe import LinearProbe
from benchbench_clip_eval.zero_shot import ZeroShot


@benchbench.hookimpl
def benchbench_evaluators():
    return [ZeroShot, LinearProbe, AttackSuccess, ClipCost]
