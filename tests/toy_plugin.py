"""A tiny, torch-free track used to test the core: registry, grid, stages, store, boards.

It exercises the real pipeline (stage cache, store, executors) in milliseconds: the
"data" is a list of numbers, the "model" is their (optionally clipped) mean.
"""
from __future__ import annotations

import json
import os
import random
import signal
import time
from typing import ClassVar

from pydantic import Field

import benchbench
from benchbench.api import DataAttack, Defense, Evaluator, Metric, Params, Task

__version__ = "0.3"


class ToyTask(Task):
    name = "toy-task"
    track = "toy"
    description = "numbers in, mean out"

    class Params(Params):
        n: int = Field(50, description="how many numbers")
        sleep: float = Field(0.0, description="seconds each training takes")

    presets: ClassVar = {"smoke": {"n": 20}}

    def dataset_name(self) -> str:
        return f"toy{self.params.n}"

    def model_name(self) -> str:
        return "mean"

    def run(self, cell, ctx):
        data = ctx.cache.get_or_build(
            "toy-data", {"task": self.identity()},
            lambda d: (d / "x.json").write_text(json.dumps([random.Random(0).gauss(0, 1) for _ in range(self.params.n)])))
        poisoned = ctx.cache.get_or_build(
            "toy-poisoned", {"data": data.key, "attack": cell.attack.identity(), "seed": ctx.seed},
            lambda d: (d / "x.json").write_text(json.dumps(cell.attack.poison(json.loads((data.path / "x.json").read_text()), ctx.seed))))

        def train(d):
            time.sleep(self.params.sleep)
            xs = json.loads((poisoned.path / "x.json").read_text())
            (d / "model.json").write_text(json.dumps({"mean": cell.defense.fit(xs)}))

        model = ctx.cache.get_or_build(
            "toy-model", {"data": poisoned.key, "defense": cell.defense.identity(), "seed": ctx.seed}, train)
        mean = json.loads((model.path / "model.json").read_text())["mean"]
        return {e.name: e.evaluate(mean, ctx.seed) for e in cell.evaluators}


class NoAttack(DataAttack):
    name = "none"
    track = "toy"
    description = "clean data"

    def poison(self, xs, seed):
        return xs


class Shift(DataAttack):
    name = "shift"
    track = "toy"
    description = "adds delta to a fraction of the numbers"

    class Params(Params):
        delta: float = 5.0
        fraction: float = Field(0.2, ge=0, le=1)

    def poison(self, xs, seed):
        rng = random.Random(seed)
        return [x + self.params.delta if rng.random() < self.params.fraction else x for x in xs]


class NoDefense(Defense):
    name = "none"
    track = "toy"
    description = "plain mean"

    def fit(self, xs):
        return sum(xs) / len(xs)


class ClipDefense(Defense):
    name = "clamp"
    track = "toy"
    description = "mean of clamped numbers"

    class Params(Params):
        bound: float = 1.0

    def fit(self, xs):
        b = self.params.bound
        return sum(min(max(x, -b), b) for x in xs) / len(xs)


class Boom(Defense):
    name = "boom"
    track = "toy"
    description = "always raises inside the cell"

    def fit(self, xs):
        raise RuntimeError("boom inside the defense")


class Crash(Defense):
    """Stands in for a segfault or an OOM kill: the executor must survive it."""

    name = "crash"
    track = "toy"
    description = "kills its own worker process"

    class Params(Params):
        marker: str = Field("", description="if set, only the first cell to create this file dies; "
                                            "later cells and retries fit the plain mean")

    def fit(self, xs):
        if not self.params.marker:
            os._exit(1)
        try:
            os.close(os.open(self.params.marker, os.O_CREAT | os.O_EXCL))  # atomic: one winner
        except FileExistsError:
            return sum(xs) / len(xs)
        os._exit(1)


class OutOfMemory(Defense):
    """Stands in for the OOM killer: SIGKILLs its own worker, every time."""

    name = "oom"
    track = "toy"
    description = "SIGKILLs its own worker process"

    def fit(self, xs):
        os.kill(os.getpid(), signal.SIGKILL)


class Error(Evaluator):
    name = "error"
    track = "toy"
    description = "distance of the mean from 0"
    metrics = (Metric("abs_error", higher_is_better=False, description="|mean|", role="robustness"),
               Metric("score", higher_is_better=True, description="-|mean| + seed noise", role="utility"))

    def evaluate(self, mean, seed):
        return {"abs_error": abs(mean), "score": -abs(mean) + 0.01 * seed}


class NonFinite(Evaluator):
    """A buggy evaluator: returns NaN or inf."""

    name = "nonfinite"
    track = "toy"
    description = "returns a non-finite number"
    metrics = (Metric("value", higher_is_better=True, description="float(params.value)"),)

    class Params(Params):
        value: str = Field("nan", description="what to return: nan, inf or -inf")

    def evaluate(self, mean, seed):
        return {"value": float(self.params.value)}


@benchbench.hookimpl
def benchbench_tasks():
    return [ToyTask]


@benchbench.hookimpl
def benchbench_attacks():
    return [NoAttack, Shift]


@benchbench.hookimpl
def benchbench_defenses():
    return [NoDefense, ClipDefense, Boom, Crash, OutOfMemory]


@benchbench.hookimpl
def benchbench_evaluators():
    return [Error, NonFinite]


FINISHED = []


@benchbench.hookimpl
def benchbench_cell_finished(cell, key, status, metrics, error):
    FINISHED.append((cell.label, status))
    log = os.environ.get("TOY_FINISHED_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{status}\n")
