"""Test-time defenses in smoke cells of both tracks: applied at evaluation (the numbers
move off none's on none's own model, which is reused, not retrained), part of the cell
key, and labelled on the board with how the attacks got through them."""
from __future__ import annotations

import pytest

from benchbench.config import GridConfig, expand
from benchbench_testtime import ClipJpeg, ClipMedian, DiffPure, ReidJpeg, ReidMedian


def metrics(result: dict) -> dict:
    return {ev: {m: v["value"] for m, v in values.items()} for ev, values in result["metrics"].items()}


def cell_key(registry, track: str, defense) -> str:
    evaluators = {"clip": ["zero-shot"], "reid": ["reid-rank"]}[track]
    config = GridConfig(track=track, attacks=["none"], defenses=[defense], evaluators=evaluators, seeds=[0])
    (cell,) = expand(config, registry, preset="smoke")
    return cell.resolve(registry).key()


@pytest.mark.parametrize("track", ["clip", "reid"])
def test_a_test_time_defense_is_its_own_cell(benchbench_registry, track):
    keys = {cell_key(benchbench_registry, track, d) for d in
            ["none", "jpeg", {"name": "jpeg", "params": {"quality": 50}}, "median"]}
    assert len(keys) == 4


def test_reid_purifiers_change_the_attacked_numbers_on_nones_model(reid_context):
    plain = reid_context.run()  # metric-fgsm on none's smoke model
    jpeg = {"name": "jpeg", "params": {"quality": 20}}  # a coarse codec: smoke rankings are few
    bpda = {"name": "jpeg", "params": {"quality": 20, "bpda": True}}
    for defense, gradient in [(jpeg, "oblivious"), (bpda, "bpda"), ("median", "exact")]:
        result = reid_context.run(defense=defense)
        assert result["stages"].get("reid-model:build", 0) == 0  # none's model, not retrained
        assert result["components"]["defense"]["attacker_gradient"] == gradient
        assert metrics(result) != metrics(plain), defense
    assert "attacker_gradient" not in plain["components"]["defense"]


def test_clip_purifier_changes_the_attacked_numbers_on_nones_model(clip_context):
    plain = clip_context.run()  # badnets on none's smoke model
    result = clip_context.run(defense={"name": "median", "params": {"size": 5}})
    assert result["stages"].get("clip-model:build", 0) == 0
    assert metrics(result) != metrics(plain)
    assert "attacker_gradient" not in result["components"]["defense"]  # poisoning: no gradient attack


@pytest.mark.parametrize("cls", [ClipJpeg, ClipMedian])
def test_clip_contract(clip_context, cls):
    clip_context.check(cls)


@pytest.mark.parametrize("cls", [ReidJpeg, ReidMedian])
def test_reid_contract(reid_context, cls):
    reid_context.check(cls)


def test_diffpure_runs_end_to_end_through_the_purifier(reid_context):
    plain = reid_context.run()
    exact = reid_context.check(DiffPure)
    assert exact["stages"]["reid-purifier-generator:build"] == 1
    bpda = reid_context.run(defense={"name": "diffpure", "params": {"bpda": True}})
    assert bpda["stages"].get("reid-purifier-generator:build", 0) == 0  # one generator per data set
    assert metrics(exact) != metrics(plain) and metrics(bpda) != metrics(exact)
    assert (exact["components"]["defense"]["attacker_gradient"],
            bpda["components"]["defense"]["attacker_gradient"]) == ("exact", "bpda")


def test_median_size_must_be_odd():
    from benchbench.errors import ConfigError

    with pytest.raises(ConfigError, match="size: .*must be odd"):
        ReidMedian({"size": 4})
