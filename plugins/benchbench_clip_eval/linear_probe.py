"""Linear probe on frozen image features (OpenAI's protocol, scikit-learn)."""
from __future__ import annotations

from pydantic import Field

from benchbench.api import RATE, Metric, Params
from benchbench.clip.api import ClipEvaluator, EvalInputs
from benchbench.clip.evaluation import PROBE_CS, chance, linear_probe
from benchbench.errors import DataError


class LinearProbe(ClipEvaluator):
    name = "linear-probe"
    version = "2"  # 2: reports chance
    description = "logistic regression on frozen image features, C chosen on a validation split"
    metrics = (Metric("top1", True, "test accuracy of the probe trained on the evaluation set's train split",
                      role="utility", references=("chance",), **RATE),
               Metric("chance", True, "top-1 of always naming the test split's most frequent class (the floor)",
                      **RATE))

    class Params(Params):
        cs: list[float] = Field(list(PROBE_CS), min_length=1, description="inverse L2 strengths to sweep")
        val_fraction: float = Field(0.25, gt=0, lt=1, description="share of the probe's training images used "
                                                                 "to choose C")

    def evaluate(self, inputs: EvalInputs) -> dict[str, float]:
        if inputs.probe_train is None:
            raise DataError("the evaluation set has no 'train' split; the linear probe needs one "
                            "(train/<class>/ folders)")
        train, test = inputs.probe_train, inputs.test
        acc, _c = linear_probe(inputs.features(train).numpy(), train.labels.numpy(),
                               inputs.features(test).numpy(), test.labels.numpy(),
                               cs=self.params.cs, val_fraction=self.params.val_fraction, seed=inputs.seed)
        return {"top1": acc, "chance": chance(test.labels)}
