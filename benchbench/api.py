"""What plugins implement: the component base classes.

Every component (a track's Task, a DataAttack, an InputAttack, a Defense, an Evaluator)
is a class with a ``name``, a ``track``, a ``version``, a one-line ``description`` and a
pydantic ``Params`` model whose fields are the component's typed parameters with their
defaults. Params are data: they come from YAML/JSON configs, are validated here, and
are hashed (with the version) into every cache key and result row, so changing a
default or bumping a version never silently reuses an old artifact.

This module is torch-free on purpose: ``benchbench plugins``, config validation and
leaderboard building must not pay for importing torch. The per-track contracts (what a
CLIP attack returns, what a ReID defense trains) are refined in ``benchbench.clip.api``
and ``benchbench.reid.api``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import UnionType
from typing import Any, ClassVar, Iterable, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_jsonable_python

from benchbench import DISTRIBUTION
from benchbench.errors import ConfigError

Kind = Literal["task", "attack", "defense", "evaluator"]


class Params(BaseModel):
    """Base for every component's parameters: strict about unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class PluginInfo:
    """Which plugin gave a component: recorded in every result row."""

    name: str  # the plugin's registered name (entry-point name or module path)
    distribution: str  # the installed distribution ("benchbench-robust", "my-defense") or "local"
    version: str


BUILTIN = PluginInfo("builtin", DISTRIBUTION, "0")
RATE: dict[str, float] = {"low": 0.0, "high": 1.0}  # the range of every rate and accuracy


@dataclass(frozen=True)
class Metric:
    """A metric definition that travels with every result.

    ``role`` tells the leaderboard what the metric stands for, so its Pareto plots need
    no track names: ``"utility"`` is task performance (zero-shot accuracy, mAP): its
    clean column (attack ``none``) is the model's clean utility and its attacked
    columns what is left of it under attack; ``"robustness"`` measures only the attack
    (attack success rate); ``"cost"`` is what training took (seconds, steps: the board's
    efficiency table); ``"diagnostic"`` describes the cell rather than ranks the defenses
    (a base rate, a spread that a collapsed model also minimises): the boards show it on
    a neutral colour scale and never mark a best entry; ``None`` is a quality worth
    ranking that is neither axis of a Pareto plot (a re-matching error rate).
    """

    name: str
    higher_is_better: bool
    description: str
    formula_version: str = "1"
    role: Literal["utility", "robustness", "cost", "diagnostic"] | None = None
    # The values the metric can take: ``validate`` rejects an entry outside them (an
    # ASR of 2.0 is a bug, not a result). ``None``: unbounded on that side. Rates and
    # accuracies pass ``**RATE``.
    low: float | None = None
    high: float | None = None
    # Metrics of the same evaluator that are reference points for this one (``chance`` for
    # an accuracy, ``random_floor`` for a re-matching error rate): the board shows them as
    # rows of this metric's table instead of as tables of their own.
    references: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"metric '{self.name}': low {self.low} > high {self.high}")

    def contains(self, value: float, tolerance: float = 1e-9) -> bool:
        """Whether ``value`` lies in the declared range (NaN is left to the finiteness checks)."""
        return not ((self.low is not None and value < self.low - tolerance)
                    or (self.high is not None and value > self.high + tolerance))

    def definition(self) -> dict[str, Any]:
        """What a stored result records about the metric, so boards explain it without our code."""
        return {"role": self.role, "low": self.low, "high": self.high, "description": self.description,
                "references": list(self.references)}


class Component:
    """Base of every plugin component.

    Subclasses set the class attributes below and nest a ``Params(benchbench.api.Params)``
    model. ``presets`` maps a preset name ("smoke", "default", "paper") to parameter
    overrides, so one config can be run at test size or at paper size.
    """

    kind: ClassVar[Kind]
    name: ClassVar[str]
    track: ClassVar[str]
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    plugin: ClassVar[PluginInfo] = BUILTIN  # set by the registry when the class is loaded
    #: Params added after results were stored under this ``version``: ``identity`` leaves
    #: each out while it holds its default, so every stored cell key, stage key and board
    #: protocol stays what it was (a param at its default changes no number).
    added_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Params | dict[str, Any] | None = None, preset: str | None = None):
        self.params = self.resolve_params(params, preset)

    @classmethod
    def resolve_params(cls, params: Params | dict[str, Any] | None = None, preset: str | None = None) -> Params:
        """Defaults < preset overrides < given params, validated into ``cls.Params``."""
        if isinstance(params, cls.Params):
            return params
        merged = dict(cls.presets.get(preset, {})) if preset else {}
        merged.update(params or {})
        try:
            return cls.Params(**merged)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors()
            )
            fields = ", ".join(cls.Params.model_fields) or "none"
            raise ConfigError(
                f"bad params for {cls.kind} '{cls.name}' ({cls.track}): {problems} "
                f"(its params are: {fields})"
            ) from None

    @classmethod
    def describe_params(cls) -> list[dict[str, Any]]:
        """Name, type, default (as JSON), allowed values and help of every param, for
        `benchbench plugins -v`, its JSON listing and docs. ``choices`` lists the values of
        a ``Literal`` param (``None`` for any other type)."""
        out = []
        for fname, field in cls.Params.model_fields.items():
            ann = field.annotation
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            out.append(
                {
                    "name": fname,
                    "type": _type_name(ann),
                    "default": to_jsonable_python(default, fallback=repr),
                    "required": field.is_required(),
                    "choices": _choices(ann),
                    "help": field.description or "",
                }
            )
        return out

    def identity(self, drop: Iterable[str] = ()) -> dict[str, Any]:
        """What makes this component's output what it is: hashed into cache keys.

        ``drop``: params a stage does not depend on (a board label, the evaluation data
        of a trained model), left out of that stage's key so changing them rebuilds nothing.
        """
        fields = type(self.params).model_fields
        skip = set(drop) | {n for n in self.added_params if getattr(self.params, n) == fields[n].default}
        return {
            "kind": self.kind,
            "track": self.track,
            "name": self.name,
            "version": self.version,
            "params": json.loads(self.params.model_dump_json(exclude=skip)),
        }

    def __repr__(self) -> str:
        return f"<{self.kind} {self.track}/{self.name} v{self.version} {self.params!r}>"


class Task(Component):
    """A track: runs one grid cell end to end.

    It builds (or loads from the stage cache) the data, applies the cell's attack, asks
    the defense for a model, and runs the evaluators. Its params are the track's
    protocol (data set, model, training budget): fixed across defenses so that cells are
    comparable.
    """

    kind: ClassVar[Kind] = "task"

    def run(self, cell: "ResolvedCell", ctx: "RunContext") -> dict[str, dict[str, float]]:
        """Return ``{evaluator name: {metric name: value}}`` for the cell."""
        raise NotImplementedError

    def dataset_name(self) -> str:
        """Short name of the data set this task instance runs on (leaderboard column)."""
        raise NotImplementedError

    def model_name(self) -> str:
        """Short name of the architecture (leaderboard column)."""
        raise NotImplementedError

    def check_data(self) -> None:
        """Pre-flight: raise a ``DataError`` (or ``ConfigError``) naming the problem and the
        fix when the data this task would read is missing or in no accepted layout.

        The grid calls it once per distinct task before any cell runs, so a bad path is one
        line and exit 2, not a failed cell per attack, defense and seed. Cheap checks only
        (paths, layouts, file names, columns); decoding every image is the cells' work.
        The default has nothing to check (data the task generates itself).
        """


class Attack(Component):
    """What every attack declares, train-time or test-time.

    An *adaptive* attack is written knowing a kind of defense: ``adaptive_to`` says which
    (``"caption re-matching (RoCLIP, OTCCLIP)"``) and ``extends`` names the non-adaptive
    attack it keeps the budget of. The runner stores both with the cell; the board shows
    adaptive columns in their own section, beside the column of the attack they extend,
    so a defense's robustness is read against the attacks that know it.
    """

    kind: ClassVar[Kind] = "attack"
    adaptive_to: ClassVar[str] = ""  # empty: not adaptive
    extends: ClassVar[str] = ""  # the non-adaptive attack with the same budget, if any


class DataAttack(Attack):
    """A train-time attack: returns a poisoned training set plus what its evaluator needs.

    The signature of ``poison`` is track-specific (see ``benchbench.clip.api``).
    """

    stage: ClassVar[str] = "train"


class InputAttack(Attack):
    """A test-time attack: perturbs a batch of inputs given the model.

    Track kits define the exact call (``benchbench.reid.api``); ReID attacks build a
    ``torchattacks.Attack`` so they also work outside benchbench.
    """

    stage: ClassVar[str] = "test"


class Defense(Component):
    """Trains a model for its track (the track's trainer calls its hooks) and may act at
    inference too, through the track's ``purifier`` hook: a transform of every image the
    evaluators and the attacks give the model (``benchbench.purify``).

    ``test_time = True`` marks a defense that acts *only* at inference: the track does not
    train it, it evaluates the ``none`` defense's model of the same data and seed (the
    stage the grid's ``none`` cells use, a cache hit) behind the defense's purifier. A
    training defense that also purifies keeps ``test_time = False`` and overrides
    ``purifier``: it is trained and purified.
    """

    kind: ClassVar[Kind] = "defense"
    test_time: ClassVar[bool] = False

    def attacker_gradient(self) -> str | None:
        """How a gradient attack of the cell gets through the defense's purifier, stored with
        the cell and shown on the board next to the defense's name: ``"exact"`` (it
        differentiates the purifier), ``"bpda"`` (the purifier in the forward pass, identity
        in the backward pass: Athalye et al. 2018), ``"oblivious"`` (the attack is crafted
        on the bare model and purified afterwards), or None (no purifier, or no gradient
        attack in the track)."""
        return None

    def trained_against(self) -> tuple[str, ...]:
        """Names of the attacks this defense meets during training (adversarial training's
        own attack). The runner stores them with the cell and the board marks those
        columns as seen, so the unseen columns read as the generalisation test they are."""
        return ()

    def state_dict(self) -> dict[str, Any]:
        """What the defense carries from one training step to the next (a caption pool, a
        safe set, its attacks' random generators), for the trainer's checkpoints: tensors,
        numbers, strings and lists, tuples or dicts of them (``benchbench.checkpoint``;
        never pickled). A defense that keeps no such state returns nothing (the default);
        one that does must implement this pair, or a resumed cell would differ from an
        uninterrupted one."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned. The trainer calls it when resuming, after
        the defense has set itself up for the training (``train`` on the CLIP track,
        ``prepare_data`` and ``on_train_start`` on ReID) and before the first resumed step."""
        return None


class Evaluator(Component):
    """Returns named metrics; ``metrics`` declares each one's direction."""

    kind: ClassVar[Kind] = "evaluator"
    metrics: ClassVar[tuple[Metric, ...]] = ()

    @classmethod
    def metric(cls, name: str) -> Metric:
        for m in cls.metrics:
            if m.name == name:
                return m
        raise KeyError(f"evaluator '{cls.name}' declares no metric '{name}'")


def _type_name(ann: Any) -> str:
    """``int``, or ``Literal['a', 'b']`` and ``int | None`` as written (``__name__`` of a
    ``Literal`` is just "Literal")."""
    if get_origin(ann) is None and hasattr(ann, "__name__"):
        return ann.__name__
    return str(ann).replace("typing.", "")


def _choices(ann: Any) -> list[Any] | None:
    """The allowed values of a ``Literal`` param, also inside ``Optional``/a union."""
    if get_origin(ann) is Literal:
        return list(get_args(ann))
    if get_origin(ann) in (Union, UnionType):
        found = [v for arg in get_args(ann) for v in (_choices(arg) or [])]
        if found:
            return found + ([None] if type(None) in get_args(ann) else [])
    return None


# Imported late: these modules import Component types for annotations only.
from benchbench.cells import ResolvedCell  # noqa: E402
from benchbench.context import RunContext  # noqa: E402

__all__ = [
    "Attack",
    "BUILTIN",
    "Component",
    "DataAttack",
    "Defense",
    "Evaluator",
    "InputAttack",
    "Kind",
    "Metric",
    "Params",
    "PluginInfo",
    "RATE",
    "ResolvedCell",
    "RunContext",
    "Task",
]
