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
