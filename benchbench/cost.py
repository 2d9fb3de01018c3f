"""Training cost of a cell's model, read from what its model stage recorded.

Both tracks train through a shared trainer that writes ``train_log.json`` (one record per
epoch with its wall ``seconds``, its optimiser ``steps`` and, in ``timed``, the seconds
spent in named defense work such as CLIP re-matching) next to the model, and the stage
cache writes ``build_seconds`` into ``stage.json``. The ``cost`` evaluator of each track
reads those files, so cost is a metric like any other: stored per cell, averaged over
seeds, shown in the board's efficiency table. A model stage built once and shared by
several cells (every ReID attack column) reports the same cost in each of them.

The numbers are wall-clock times on whatever machine built the model: comparable
within one board's run, not across hardware.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchbench.api import Metric
from benchbench.stages import META

TRAIN_LOG = "train_log.json"

COST_METRICS = (
    Metric("train_seconds", False, "wall seconds of the training epochs (the trainer's loop, "
           "summed over every phase)", role="cost", low=0.0),
    Metric("build_seconds", False, "wall seconds of building the model stage: training plus data preparation "
           "and any shared stage (e.g. a generator) it had to build first", role="cost", low=0.0),
    Metric("steps", False, "optimiser steps over every training phase", role="cost", low=0.0),
    Metric("match_seconds", False, "wall seconds spent re-matching images to captions (re-matching defenses "
           "only)", role="cost", low=0.0),
)


def _epochs(log: Any) -> list[dict[str, Any]]:
    """Per-epoch records: CLIP's log is the list itself, ReID's keeps it under ``epochs``."""
    epochs = log.get("epochs", []) if isinstance(log, dict) else log
    return [e for e in epochs if isinstance(e, dict)] if isinstance(epochs, list) else []


def training_cost(model_dir: Path) -> dict[str, float]:
    """The cost metrics a model stage's files support; a model trained before the trainer
    logged ``steps`` or ``timed`` simply lacks those metrics."""
    out: dict[str, float] = {}
    meta = model_dir / META
    if meta.is_file():
        out["build_seconds"] = float(json.loads(meta.read_text())["build_seconds"])
    log = model_dir / TRAIN_LOG
    if not log.is_file():
        return out
    epochs = _epochs(json.loads(log.read_text()))
    out["train_seconds"] = float(sum(e.get("seconds", 0.0) for e in epochs))
    if epochs and all("steps" in e for e in epochs):
        out["steps"] = float(sum(e["steps"] for e in epochs))
    matching = [e["timed"]["match"] for e in epochs if "match" in e.get("timed", {})]
    if matching:
        out["match_seconds"] = float(sum(matching))
    return out
