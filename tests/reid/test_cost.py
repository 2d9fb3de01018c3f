"""The ReID cost evaluator reads the model stage the task hands it, and metric-at says
which attack it trains against (so the board marks that column as seen)."""
from __future__ import annotations

import json

from benchbench_metric_at import MetricAT
from benchbench_reid_eval import ReidCost


def test_reid_cost_reads_the_model_stage(tmp_path):
    (tmp_path / "stage.json").write_text(json.dumps({"build_seconds": 9.0}))
    (tmp_path / "train_log.json").write_text(json.dumps({"epochs": [{"seconds": 4.0, "steps": 7}]}))
    cost = ReidCost()
    assert cost.evaluate_model(None, None, tmp_path) == {"build_seconds": 9.0, "train_seconds": 4.0, "steps": 7.0}
    assert {m.name for m in cost.metrics} == {"build_seconds", "train_seconds", "steps"}


def test_metric_at_trains_against_a_registered_attack(registry):
    assert MetricAT().trained_against() == ("fna",)
    assert registry.get("attack", "reid", "fna").name == "fna"
