"""Each defense end to end through ``run_cell`` (smoke preset: seconds each), plus the
shared pool loop on hand-made features."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from benchbench.clip.model import Features, contrastive_loss
from benchbench.clip.rematch import MATCHES_FILE, FeatureQueue, MatchLog
from benchbench.runner import Environment, run_cell
from benchbench_roclip import RoCLIP
from benchbench_safeclip import COMPOSITION_FILE, SAFE_SETS_FILE

DEFENSES = ("roclip", "otcclip", "safeclip", "cleanclip")


def _spec(defense: str, attack: str = "badnets") -> dict:
    return {"track": "clip", "task": {"name": "clip-poisoning", "params": {}},
            "attack": {"name": attack, "params": {}}, "defense": {"name": defense, "params": {}},
            "evaluators": [{"name": "zero-shot", "params": {}}, {"name": "asr", "params": {}},
                           {"name": "rematch", "params": {}}, {"name": "safe-set", "params": {}}],
            "seed": 0, "preset": "smoke"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, registry) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("clip-defenses")
    env = Environment(cache_root=str(root), progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only fight over the 2 shared cores
    try:
        return root, {d: run_cell(_spec(d), env, registry) for d in DEFENSES}
    finally:
        torch.set_num_threads(threads)


def _stage(root: Path, defense: str, attack: str = "badnets") -> Path:
    """The model stage a defense trained on the attack's data."""
    for meta in (root / "clip-model").glob("*/stage.json"):
        parts = json.loads(meta.read_text())["parts"]
        if parts["defense"]["name"] == defense and meta.parent.joinpath("train_log.json").exists():
            poisoned = json.loads(next((root / "clip-poisoned").glob(f"{parts['data']}/stage.json")).read_text())
            if poisoned["parts"]["attack"]["name"] == attack:
                return meta.parent
    raise AssertionError(f"no model stage for {defense}/{attack}")


@pytest.mark.parametrize("defense", DEFENSES)
def test_defense_runs_end_to_end(runs, defense):
    _, results = runs
    result = results[defense]
    assert result["status"] == "ok", result["traceback"]
    assert 0 <= result["metrics"]["zero-shot"]["top1"]["value"] <= 1
    assert "asr" in result["metrics"]["asr"]


@pytest.mark.parametrize("defense", ["roclip", "otcclip"])
def test_rematching_defenses_record_their_matches(runs, defense):
    root, results = runs
    metrics = results[defense]["metrics"]["rematch"]
    assert {"recall", "precision", "false_rematch_rate", "random_floor", "false_rematch_rate_plain"} <= set(metrics)
    assert ("recall_global" in metrics) == (defense == "otcclip")
    assert (_stage(root, defense) / MATCHES_FILE).is_file()


@pytest.mark.parametrize("defense", ["safeclip", "cleanclip"])
def test_other_defenses_report_no_rematch_metrics(runs, defense):
    assert runs[1][defense]["metrics"].get("rematch", {}) == {}


def test_safeclip_and_cleanclip_train_in_their_phases(runs):
    root, _ = runs
    phases = lambda d: [r["phase"] for r in json.loads((_stage(root, d) / "train_log.json").read_text())]  # noqa: E731
    assert phases("safeclip") == ["inmodal-warmup", "clip-warmup", "filtered"]
    assert phases("cleanclip") == ["train", "finetune"]
    safe_log = json.loads((_stage(root, "safeclip") / "train_log.json").read_text())
    assert set(safe_log[0]["loss"]) == {"unimodal"} and "clip" in safe_log[-1]["loss"]
    safe_sets = load_file(str(_stage(root, "safeclip") / SAFE_SETS_FILE))
    assert safe_sets["epoch"].tolist() == [2] and safe_sets["safe"].shape == (1, 256)
    composition = json.loads((_stage(root, "safeclip") / COMPOSITION_FILE).read_text())["epochs"]
    assert [e["epoch"] for e in composition] == [2]
    assert composition[0]["safe_fraction"] == pytest.approx(safe_sets["safe"][0].float().mean().item())


def test_only_safeclip_reports_its_safe_set(runs):
    _, results = runs
    metrics = results["safeclip"]["metrics"]["safe-set"]
    assert {"safe_fraction", "safe_share_clean", "safe_share_poison"} <= set(metrics)
    assert all(results[d]["metrics"].get("safe-set", {}) == {} for d in DEFENSES if d != "safeclip")


def _state(epoch: int, epochs: int = 10) -> SimpleNamespace:
    """What the pool loop reads of a TrainState: the epoch within a one-phase plan."""
    return SimpleNamespace(global_epoch=epoch, epoch=epoch, phase=SimpleNamespace(epochs=epochs),
                           timed=lambda what: contextlib.nullcontext())


def test_pool_loop_trains_images_with_their_pooled_neighbours():
    """In a matching epoch the CLIP loss pairs each image with the pooled caption nearest
    to it (the pool before this batch), and the record names that caption's row."""
    defense = RoCLIP({"pool_size": 8, "match_every": 1, "first_match_epoch": 1})
    defense.pool, defense.matches = FeatureQueue(8), MatchLog()  # what train() sets up
    e = torch.eye(4)
    defense.pool.push(e, torch.tensor([10, 11, 12, 13]))
    image = F.normalize(e[[2, 0]] + 0.1, dim=1)
    text = F.normalize(torch.randn(2, 4), dim=1)
    features = Features(image, text, torch.tensor(5.0))
    batch = SimpleNamespace(index=torch.tensor([0, 1]), caption_index=torch.tensor([0, 1]))
    terms = defense.loss(batch, features, _state(0))
    assert torch.allclose(terms["clip"], contrastive_loss(image, e[[2, 0]], torch.tensor(5.0)))
    assert defense.matches.tensors()["caption_row"].tolist() == [12, 10]
    assert len(defense.pool) == 6  # then the batch's captions joined the pool
    # outside matching epochs: own captions, nothing recorded
    defense.params = RoCLIP.Params(pool_size=8, match_every=2, first_match_epoch=2)
    terms = defense.loss(batch, features, _state(0))
    assert torch.allclose(terms["clip"], contrastive_loss(image, text, torch.tensor(5.0)))
    assert len(defense.matches) == 2
