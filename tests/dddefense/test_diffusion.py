"""The generator: tiny training runs, save/load round trip, deterministic sampling."""
from __future__ import annotations

import pytest
import torch

from benchbench.errors import DataError
from benchbench.reid.diffusion import DiffusionConfig, load, references, sample, save, train_diffusion

TINY = DiffusionConfig(size=(16, 8), channels=(16, 32), train_steps=3, batch_size=4)


@pytest.fixture(scope="module")
def toy():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 32, 16), dtype=torch.uint8, generator=gen)
    pids = torch.arange(4).repeat_interleave(3)
    camids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0])  # identity 0: camera 0 only
    model, losses = train_diffusion(images, pids, camids, 4, 2, TINY, seed=0, show_progress=False)
    return images, pids, camids, model, losses


def test_training_is_deterministic(toy):
    images, pids, camids, model, losses = toy
    again, losses2 = train_diffusion(images, pids, camids, 4, 2, TINY, seed=0, show_progress=False)
    assert len(losses) == 3 and all(l > 0 for l in losses) and losses == losses2
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_samples_have_the_data_size_and_repeat_for_a_seed(toy):
    images, pids, _, model, _ = toy
    want_p, want_c = torch.tensor([0, 3, 3]), torch.tensor([1, 0, 1])
    a = sample(model, want_p, want_c, images, pids, sampling_steps=2, seed=5, guidance=2.0)
    b = sample(model, want_p, want_c, images, pids, sampling_steps=2, seed=5, guidance=2.0)
    c = sample(model, want_p, want_c, images, pids, sampling_steps=2, seed=6, guidance=2.0)
    assert a.shape == (3, 3, 32, 16) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sample(model, want_p[:0], want_c[:0], images, pids, 2, 0).shape == (0, 3, 32, 16)


def test_an_identity_can_be_drawn_by_a_camera_that_never_saw_it(toy):
    """The condition is factorised: (identity 0, camera 1) was never in training, yet
    its condition is defined and differs from (identity 0, camera 0)."""
    noisy = torch.randn(2, 3, 16, 8)
    model = toy[3]
    out = model(noisy, torch.tensor([10, 10]), torch.tensor([0, 0]), torch.tensor([0, 1]), torch.zeros(2, 3, 16, 8))
    assert out.shape == noisy.shape and not torch.allclose(out[0], out[1])


def test_save_load_round_trip(toy, tmp_path):
    images, pids, _, model, _ = toy
    save(model, tmp_path)
    back = load(tmp_path)
    assert (back.num_ids, back.num_cams) == (4, 2)
    args = (torch.tensor([1]), torch.tensor([0]), images, pids, 2, 0)
    assert torch.equal(sample(model, *args), sample(back, *args))
    with pytest.raises(DataError, match="diffusion.json"):
        load(tmp_path / "unet")


def test_references_are_other_images_of_the_same_identity():
    pids = torch.tensor([0, 0, 1, 2, 2, 2])
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        idx = references(pids, pids, gen, exclude=torch.arange(6))
        assert torch.equal(pids[idx], pids)
        assert idx[2] == 2  # a single image is its own reference
        assert all(idx[k] != k for k in (0, 1, 3, 4, 5))


def test_training_leaves_the_global_rng_alone(toy):
    """Issue #14: the generator's seed must not reseed its caller (the ReID trainer)."""
    images, pids, camids, *_ = toy
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train_diffusion(images, pids, camids, 4, 2, TINY, seed=0, show_progress=False)
    assert torch.equal(torch.get_rng_state(), before)
