"""Zero-shot classification of the evaluation test split (CLIP's prompt-ensemble protocol)."""
from __future__ import annotations

from benchbench.api import RATE, Metric
from benchbench.clip.api import ClipEvaluator, EvalInputs
from benchbench.clip.evaluation import chance, topk_accuracy


class ZeroShot(ClipEvaluator):
    name = "zero-shot"
    version = "2"  # 2: reports chance
    description = "zero-shot top-1 (and top-5 with more than 5 classes) on the evaluation test split"
    metrics = (Metric("top1", True, "fraction of test images whose closest class prompt is their class",
                      role="utility", references=("chance",), **RATE),
               Metric("top5", True, "fraction whose class is among the 5 closest (reported with > 5 classes)",
                      **RATE),
               Metric("chance", True, "top-1 of always naming the test split's most frequent class (the floor)",
                      **RATE))

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        logits = inputs.features(inputs.test) @ inputs.classifier().T
        out = {"top1": topk_accuracy(logits, inputs.test.labels, 1), "chance": chance(inputs.test.labels)}
        if len(inputs.test.classes) > 5:
            out["top5"] = topk_accuracy(logits, inputs.test.labels, 5)
        return out
