from __future__ import annotations

import pytest

from benchbench.reid.synthetic import SyntheticSpec, generate

TINY = SyntheticSpec(train_ids=10, test_ids=6, cameras=3, height=32, width=16, mean_images_per_id=6,
                     distractors=4, junk=3)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A small Market-1501-layout folder written by the generator."""
    root = tmp_path_factory.mktemp("market")
    generate(root, TINY)
    return root


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared machine two
    OpenMP threads spin against other processes (measured: 100x slower under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
