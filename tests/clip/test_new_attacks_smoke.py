"""Each new CLIP attack, and CleanCLIP's ablations, in one smoke cell (``benchbench.testing``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchbench.errors import ConfigError
from benchbench_cleanclip import CleanCLIP
from benchbench_clip_attacks import SIG, FineGrainedMimicry, LabelConsistent, ParaphraseFlood, WaNet


@pytest.mark.parametrize("attack_cls", [ParaphraseFlood, FineGrainedMimicry, SIG, WaNet, LabelConsistent])
def test_new_attack_runs_a_smoke_cell(clip_context, attack_cls):
    result = clip_context.check(attack_cls)
    assert 0 <= result["metrics"]["asr"]["asr"]["value"] <= 1


def _finetune_terms(root: Path, params: dict) -> set[str]:
    """The loss terms logged in the fine-tuning epochs of the cleanclip model with ``params``."""
    for meta in (root / "clip-model").glob("*/stage.json"):
        defense = json.loads(meta.read_text())["parts"]["defense"]
        log = meta.parent / "train_log.json"
        if defense["name"] == "cleanclip" and log.exists() and \
                all(defense["params"][k] == v for k, v in params.items()):
            return {k for r in json.loads(log.read_text()) if r["phase"] == "finetune" for k in r["loss"]}
    raise AssertionError(f"no cleanclip model stage with {params}")


@pytest.mark.parametrize("ablation, terms", [({"clip_weight": 0.0}, {"inmodal"}),
                                             ({"inmodal_weight": 0.0}, {"clip"})])
def test_cleanclip_ablation_fine_tunes_with_one_loss(clip_context, ablation, terms):
    clip_context.check(CleanCLIP, ablation)
    assert _finetune_terms(Path(clip_context.ctx.cache.root), ablation) == terms


def test_cleanclip_refuses_fine_tuning_without_a_loss():
    with pytest.raises(ConfigError, match="both 0, so fine-tuning has no loss"):
        CleanCLIP({"clip_weight": 0, "inmodal_weight": 0})


def test_the_extra_configs_expand_every_new_attack_against_their_defenses(benchbench_registry):
    from benchbench.config import expand, load_config

    def pairs(name: str) -> set[tuple[str, str, str]]:
        cells = expand(load_config(Path(__file__).parents[2] / "configs" / name), benchbench_registry)
        assert len(cells) == 3 * len({(c.attack.name, c.defense.name, json.dumps(c.defense.params)) for c in cells})
        return {(c.attack.name, c.defense.name, json.dumps(c.defense.params, sort_keys=True)) for c in cells}

    adaptive, backdoors = pairs("clip-adaptive.yaml"), pairs("clip-backdoors.yaml")
    assert {a for a, _, _ in adaptive} == {"targeted-poison", "paraphrase-flood", "fine-grained-mimicry"}
    assert {d for _, d, _ in adaptive} == {"none", "roclip", "otcclip"} and len(adaptive) == 9
    assert {a for a, _, _ in backdoors} == {"badnets", "sig", "wanet", "label-consistent"}
    assert {p for _, d, p in backdoors if d == "cleanclip"} == {"{}", '{"clip_weight": 0.0}',
                                                                 '{"inmodal_weight": 0.0}'}
