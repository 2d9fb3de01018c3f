"""The CLIP task end to end at smoke size, and the stage cache doing shared work once."""
from __future__ import annotations

import pytest

from benchbench.cells import CellSpec, ComponentRef, ResolvedCell
from benchbench.clip.task import ClipPoisoningTask
from benchbench.context import RunContext
from benchbench.errors import ConfigError
from benchbench.runner import Environment, run_cell
from benchbench.stages import StageCache
from benchbench_clip_attacks import BadNets
from benchbench_clip_baseline import StandardClip
from benchbench_clip_eval import AttackSuccess
from benchbench.clip.trainer import Phase


def _spec(attack: str, defense: str = "none", task_params: dict | None = None) -> dict:
    return CellSpec(track="clip", task=ComponentRef("clip-poisoning", task_params or {}),
                    attack=ComponentRef(attack), defense=ComponentRef(defense),
                    evaluators=tuple(ComponentRef(e) for e in ("zero-shot", "linear-probe", "asr")),
                    seed=0, preset="smoke").to_dict()


def test_smoke_cells_run_through_the_runner(registry, tmp_path):
    env = Environment(cache_root=str(tmp_path), progress=False)
    clean = run_cell(_spec("none"), env, registry)
    assert clean["status"] == "ok", clean["traceback"]
    assert clean["metrics"]["asr"] == {}  # no attack, no ASR
    assert set(clean["metrics"]["zero-shot"]) == {"top1", "top5", "chance"}
    attacked = run_cell(_spec("badnets"), env, registry)
    assert attacked["status"] == "ok", attacked["traceback"]
    asr = attacked["metrics"]["asr"]
    assert set(asr) == {"asr", "asr_clean"} and asr["asr"]["higher_is_better"] is False
    assert 0.0 <= asr["asr"]["value"] <= 1.0
    # the clean reference model for asr_clean came from the clean cell's stage
    assert attacked["stages"].get("clip-model:build") == 1 and attacked["stages"].get("clip-model:hit") == 1
    assert attacked["dataset"] == "synthetic-shapes" and attacked["model"] == "bb-tiny-vit"


def test_user_data_paths_run_the_same_pipeline(registry, world, tmp_path):
    pairs, evaluation = world
    params = {"data": str(pairs), "eval_data": str(evaluation), "n_train": 40, "n_clean": 8}
    env = Environment(cache_root=str(tmp_path), progress=False)
    spec = _spec("targeted-poison", task_params=params)
    spec["attack"]["params"] = {"n_targets": 4, "captions_per_target": 3}
    spec["task"]["params"]["batch_size"] = 16
    result = run_cell(spec, env, registry)
    assert result["status"] == "ok", result["traceback"]
    assert result["dataset"] == pairs.name
    missing_eval = run_cell(_spec("none", task_params={"data": str(pairs)}), env, registry)
    assert missing_eval["status"] == "failed" and "eval_data is required" in missing_eval["error"]


class HalfLr(StandardClip):
    name = "half-lr"
    description = "a second defense for the cache test"

    def phases(self, config):
        return [Phase("train", config.epochs, lr=config.lr / 2)]


def test_poisoned_data_is_built_once_and_reused_by_every_defense(tmp_path):
    cache = StageCache(tmp_path)
    task = ClipPoisoningTask(preset="smoke")
    attack = BadNets(preset="smoke")

    def run(defense, attack=attack):
        spec = CellSpec.from_dict(_spec(attack.name, defense.name))
        cell = ResolvedCell(spec, task, attack, defense, (AttackSuccess(),))
        return task.run(cell, RunContext(cache=cache, seed=0, preset="smoke", progress=False))

    for defense in (StandardClip(preset="smoke"), HalfLr(preset="smoke")):
        assert set(run(defense)["asr"]) == {"asr", "asr_clean"}
    assert cache.builds("clip-data") == 1
    assert cache.builds("clip-poisoned") == 2  # badnets, and the clean pairs for asr_clean
    assert cache.builds("clip-model") == 4  # two defenses, each on poisoned and on clean pairs
    run(StandardClip(preset="smoke"))
    # a repeated cell builds nothing; none's standard training is a clip-prefix stage on each
    # data set, which HalfLr (it changes the lr) does not share
    assert cache.builds("clip-prefix") == 2 and cache.builds() == 9


def test_smoke_preset_and_params_validate():
    task = ClipPoisoningTask(preset="smoke")
    assert task.params.epochs == 1 and task.model_name() == "bb-tiny-vit"
    with pytest.raises(ConfigError, match="n_train"):
        ClipPoisoningTask({"n_train": 0})


#: the task's params before data_name and eval_test_fraction existed (their defaults are unchanged)
OLD_PARAMS = {"data", "image_column", "caption_column", "eval_data", "eval_image_column", "eval_label_column",
              "templates", "n_train", "n_clean", "n_eval_train", "n_eval_test", "data_seed", "model", "pretrained",
              "image_size", "context_length", "epochs", "batch_size", "lr", "weight_decay", "warmup"}


@pytest.mark.parametrize("preset", ["smoke", "default", "paper"])
def test_new_params_at_their_default_leave_the_keys_alone(preset):
    """Stored cell keys, stage keys and board protocols of existing grids stay valid."""
    task = ClipPoisoningTask(preset=preset)
    assert set(task.identity()["params"]) == OLD_PARAMS
    assert "eval_test_fraction" not in task._data_identity()
    named = ClipPoisoningTask({"data_name": "mine"}, preset=preset)
    assert named.dataset_name() == "mine" and "data_name" in named.identity()["params"]
    assert named.identity(drop=("data_name",)) == task.identity()  # the model stage: renaming retrains nothing
