"""dddefense end to end through ``run_cell`` on the smoke preset, with its stages shared."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchbench.reid.data import load_reid_data
from benchbench.runner import Environment, run_cell
from benchbench_dddefense.balancing import GENERATED_NAME, bias_stats, camera_counts


def spec(defense: dict, attack: str = "odfa") -> dict:
    return {"track": "reid", "task": {"name": "reid-adversarial", "params": {}},
            "attack": {"name": attack, "params": {}}, "defense": defense,
            "evaluators": [{"name": "reid-rank", "params": {}}, {"name": "reid-bias", "params": {}}],
            "seed": 0, "preset": "smoke"}


def stage_dirs(cache: Path, name: str) -> list[Path]:
    return [p.parent for p in (cache / name).glob("*/stage.json")]


def test_smoke_cell_balances_and_trains(tmp_path, registry):
    env = Environment(cache_root=str(tmp_path), progress=False)
    first = run_cell(spec({"name": "dddefense", "params": {}}), env, registry)
    assert first["status"] == "ok", first["traceback"]
    assert set(first["metrics"]) == {"reid-rank", "reid-bias"}
    assert 0 <= first["metrics"]["reid-rank"]["mAP"]["value"] <= 1
    assert first["metrics"]["reid-bias"]["ap_per_id_var"]["value"] >= 0
    assert first["stages"]["dddefense-generator:build"] == 1 and first["stages"]["dddefense-balanced:build"] == 1

    # the generated images: Market-1501 names, training folder only, balancing met
    (balanced,) = stage_dirs(tmp_path, "dddefense-balanced")
    files = sorted((balanced / "bounding_box_train").glob("*.jpg"))
    assert files and all(GENERATED_NAME.match(f.name) for f in files)
    assert sorted(p.name for p in balanced.iterdir() if p.is_dir()) == ["bounding_box_train"]
    plan = json.loads((balanced / "plan.json").read_text())
    assert plan["generated"] == len(files)
    assert plan["after"]["images_per_id_min"] >= plan["delta1"]
    assert plan["after"]["camera_share_max"] <= plan["delta2"]
    (data_root,) = stage_dirs(tmp_path, "reid-synthetic")
    data = load_reid_data(data_root, (32, 16))
    names = {f.name[:4] for f in (data_root / "bounding_box_train").glob("*.jpg")}
    assert {f.name[:4] for f in files} <= names  # made for training identities, under their own ids
    before = bias_stats(camera_counts(data.train.pids, data.train.camids, data.num_train_ids, data.num_cameras))
    assert before == plan["before"]


@pytest.mark.slow
def test_ablations_share_the_generator_stages(tmp_path, registry):
    """The self_meta ablation reuses both balancing stages; balance: false builds none."""
    env = Environment(cache_root=str(tmp_path), progress=False)
    first = run_cell(spec({"name": "dddefense", "params": {}}), env, registry)
    assert first["status"] == "ok", first["traceback"]
    no_meta = run_cell(spec({"name": "dddefense", "params": {"self_meta": False}}), env, registry)
    assert no_meta["status"] == "ok", no_meta["traceback"]
    assert "dddefense-generator:build" not in no_meta["stages"]
    assert no_meta["stages"]["dddefense-balanced:hit"] == 1
    no_balance = run_cell(spec({"name": "dddefense", "params": {"balance": False}}, attack="none"), env, registry)
    assert no_balance["status"] == "ok", no_balance["traceback"]
    assert not any(k.startswith("dddefense-") for k in no_balance["stages"])


@pytest.mark.slow
def test_generated_images_are_deterministic(tmp_path, registry):
    """Same data and params -> the same generated pixels in a fresh cache."""
    pixels = []
    for sub in ("a", "b"):
        env = Environment(cache_root=str(tmp_path / sub), progress=False)
        out = run_cell(spec({"name": "dddefense", "params": {"self_meta": False}}, attack="none"), env, registry)
        assert out["status"] == "ok", out["traceback"]
        (balanced,) = stage_dirs(tmp_path / sub, "dddefense-balanced")
        pixels.append([Path(f).read_bytes() for f in sorted((balanced / "bounding_box_train").glob("*.jpg"))])
    assert pixels[0] and pixels[0] == pixels[1]


def model_dir(cache: Path, defense: str) -> Path:
    (found,) = [d for d in stage_dirs(cache, "reid-model")
                if json.loads((d / "stage.json").read_text())["parts"]["defense"]["name"] == defense]
    return found


def test_the_model_does_not_depend_on_which_cell_built_its_stages(tmp_path, registry):
    """Issue #14: the same stage key gave different weights, as building the generator
    reseeded the trainer's RNG. Trained with the generator, extension, gate and
    reference-model stages built (cold) or cached (warm), the model is byte-identical."""
    env = Environment(cache_root=str(tmp_path), progress=False)
    cold = run_cell(spec({"name": "dddefense", "params": {}}, attack="none"), env, registry)
    assert cold["status"] == "ok", cold["traceback"]
    assert cold["stages"]["dddefense-generator:build"] == 1
    trained = model_dir(tmp_path, "dddefense")
    weights = (trained / "model.safetensors").read_bytes()
    shutil.rmtree(trained)
    shutil.rmtree(tmp_path / "reid-gallery")
    warm = run_cell(spec({"name": "dddefense", "params": {}}, attack="none"), env, registry)
    assert warm["status"] == "ok", warm["traceback"]
    assert warm["stages"]["dddefense-generator:hit"] == 1 and warm["stages"]["reid-model:build"] == 1
    assert (model_dir(tmp_path, "dddefense") / "model.safetensors").read_bytes() == weights

    # the gate's reference model is the plain cell's own model stage, and its record is kept
    plain = run_cell(spec({"name": "none", "params": {}}, attack="none"), env, registry)
    assert plain["status"] == "ok", plain["traceback"]
    assert plain["stages"]["reid-model:hit"] == 1 and "reid-model:build" not in plain["stages"]
    (gated,) = stage_dirs(tmp_path, "dddefense-gate")
    record = json.loads((gated / "gate.json").read_text())
    assert record["reference_model"] == model_dir(tmp_path, "none").name
    assert record["generated"] == sum(v["generated"] for v in record["per_identity"].values())
    assert 0 <= record["acceptance_rate"] <= record["gate_acceptance_rate"] <= 1
    assert 0 <= record["real_pass_rate"] <= 1
