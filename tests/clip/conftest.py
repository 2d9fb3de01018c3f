"""Small synthetic worlds shared by the CLIP tests (written once per session)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchbench.clip.synthetic import SyntheticSpec, write_world

TINY = SyntheticSpec(n_pairs=48, n_eval_train=16, n_eval_test=16, seed=3)


@pytest.fixture(scope="session")
def tiny_spec() -> SyntheticSpec:
    return TINY


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """(pairs imagefolder, eval imagefolder) of a tiny synthetic world."""
    return write_world(tmp_path_factory.mktemp("world"), TINY)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    """Two trainings' state dicts agree to ``atol``, attention's key bias left out: softmax
    ignores it, so its gradient is rounding noise, which Adam scales to lr-sized steps that
    differ with any rounding change."""
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        if name.endswith("in_proj_bias"):
            x, y = torch.cat(x.chunk(3)[::2]), torch.cat(y.chunk(3)[::2])
        assert torch.allclose(x, y, atol=atol), name
