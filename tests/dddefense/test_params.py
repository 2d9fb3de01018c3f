"""dddefense's params: a bad ``diffusion_path`` fails when the config is read; the
attacks it trains against."""
from __future__ import annotations

import pytest

from benchbench.errors import ConfigError
from benchbench_dddefense import DDDefense


def test_diffusion_path_must_be_a_saved_generator(tmp_path):
    with pytest.raises(ConfigError, match="diffusion_path: .*is not a folder"):
        DDDefense({"diffusion_path": str(tmp_path / "missing")})
    (tmp_path / "unet").mkdir()
    (tmp_path / "diffusion.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a saved dddefense generator .*condition.safetensors, unet/config"):
        DDDefense({"diffusion_path": str(tmp_path)})
    (tmp_path / "condition.safetensors").write_bytes(b"")
    (tmp_path / "unet" / "config.json").write_text("{}")
    assert DDDefense({"diffusion_path": str(tmp_path)}).params.diffusion_path == str(tmp_path)


def test_trained_against_names_the_attack_pool():
    assert DDDefense().trained_against() == ["fna", "sma"]
    assert DDDefense({"attack_pool": ["sma"]}).trained_against() == ["sma"]
    assert DDDefense({"self_meta": False}).trained_against() == ["fna"]


def test_ce_weight_scales_the_classifier_term():
    from types import SimpleNamespace

    import torch

    from benchbench.reid.trainer import Batch, Output, TrainConfig
    from benchbench_dddefense.phases import AdversarialPhase

    features = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    run = SimpleNamespace(forward=lambda batch: Output(torch.zeros(4, 2), features), config=TrainConfig(),
                          ce=lambda logits, pids: torch.tensor(2.0))
    batch = Batch(torch.zeros(4, 3, 8, 4), torch.tensor([0, 0, 1, 1]), torch.zeros(4, dtype=torch.int64))

    def ce(weight: float) -> float:
        phase = AdversarialPhase.__new__(AdversarialPhase)  # the terms only, no attacks built
        phase.p = DDDefense({"ce_weight": weight}).params
        return float(phase.terms(batch, lambda images, pids: images, features, run)["ce"])

    assert (ce(1.0), ce(0.25), ce(0.0)) == (2.0, 0.5, 0.0)
