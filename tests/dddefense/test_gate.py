"""The identity-preservation gate and the synthetic-share cap, with a fake feature extractor."""
from __future__ import annotations

import torch

from benchbench_dddefense.gate import cap_share, identity_gate, prototypes, summary


def mean_colour(images: torch.Tensor) -> torch.Tensor:
    """A stand-in ReID model: an image's feature is its mean colour (clothing colour)."""
    return images.float().mean((2, 3))


def solid(rgb: tuple[int, int, int], n: int = 1) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8)[None, :, None, None].expand(n, 3, 8, 4).clone()


REAL = torch.cat([solid((200, 10, 10), 3), solid((10, 200, 10), 3), solid((10, 10, 200), 2)])
REAL_PIDS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])


def test_an_image_of_the_wrong_identity_is_rejected_and_one_of_the_right_kept():
    generated = torch.cat([solid((190, 20, 15)), solid((15, 190, 20))])  # both meant for identity 0 (red)
    keep = identity_gate(mean_colour, REAL, REAL_PIDS, generated, torch.tensor([0, 0]), num_ids=3)
    assert keep.tolist() == [True, False]


def test_the_gate_ranks_among_all_training_identities():
    generated = solid((15, 20, 190))  # blue: identity 2, whatever it was meant for
    intended = torch.tensor([2])
    assert identity_gate(mean_colour, REAL, REAL_PIDS, generated, intended, 3).tolist() == [True]
    assert identity_gate(mean_colour, REAL, REAL_PIDS, generated, intended - 1, 3).tolist() == [False]
    assert identity_gate(mean_colour, REAL, REAL_PIDS, generated[:0], intended[:0], 3).shape == (0,)


def test_prototypes_are_unit_means_of_normalised_features():
    protos = prototypes(torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]]), torch.tensor([0, 0, 1]), 3)
    assert torch.allclose(protos[0], torch.tensor([2 ** -0.5, 2 ** -0.5]))
    assert torch.allclose(protos[2], torch.zeros(2))  # no images: never the nearest of a unit feature


def test_cap_keeps_the_first_accepted_images_up_to_the_share():
    intended = torch.tensor([0, 0, 0, 0, 1, 1])
    keep = torch.tensor([True, False, True, True, True, True])
    real = torch.tensor([2, 1])
    # share 0.5: at most as many synthetic as real images
    assert cap_share(keep, intended, real, 0.5).tolist() == [True, False, True, False, True, False]
    assert cap_share(keep, intended, real, 1.0).tolist() == keep.tolist()
    assert not cap_share(keep, intended, real, 0.0).any()


def test_summary_counts_per_identity():
    intended, passed = torch.tensor([0, 0, 1]), torch.tensor([True, False, True])
    out = summary(intended, passed, torch.tensor([True, False, False]), {0: 7, 1: 9})
    assert out["per_identity"] == {"7": {"generated": 2, "passed_gate": 1, "kept": 1},
                                   "9": {"generated": 1, "passed_gate": 1, "kept": 0}}
    assert (out["gate_acceptance_rate"], out["acceptance_rate"]) == (round(2 / 3, 4), round(1 / 3, 4))
