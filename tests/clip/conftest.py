"""Small synthetic worlds shared by the CLIP tests (written once per session)."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchbench.clip.synthetic import SyntheticSpec, write_world

TINY = SyntheticSpec(n_pairs=48, n_eval_train=16, n_eval_test=16, seed=3)


@pytest.fixture(scope="session")
def tiny_spec() -> SyntheticSpec:
    return TINY


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """(pairs imagefolder, eval imagefolder) of a tiny synthetic world."""
    return write_world(tmp_path_factory.mktemp("world"), TINY)
