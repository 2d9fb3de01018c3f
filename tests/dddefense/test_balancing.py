"""Balancing phase: count tables, the generation plan, and the written layout."""
from __future__ import annotations

import shutil

import pytest
import torch

from benchbench.errors import ConfigError
from benchbench.reid.data import load_reid_data
from benchbench.reid.synthetic import SyntheticSpec, generate
from benchbench_dddefense.balancing import (bias_stats, camera_counts, generated_name, needed, plan,
                                            read_layout, write_layout)


def test_camera_counts_table():
    pids = torch.tensor([0, 0, 0, 1, 2, 2])
    cams = torch.tensor([0, 0, 2, 1, 1, 2])
    counts = camera_counts(pids, cams, num_ids=3, num_cams=3)
    assert counts.tolist() == [[2, 0, 1], [0, 1, 0], [0, 1, 1]]
    stats = bias_stats(counts)
    assert stats["images_per_id_min"] == 1 and stats["images_per_id_max"] == 3
    assert stats["camera_share_max"] == 1.0 and stats["camera_share_mean"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)


def test_plan_meets_both_bounds_with_fewest_images():
    counts = torch.tensor([[9, 1, 0, 0],   # camera-biased: share 0.9
                           [1, 1, 0, 0],   # rare: 2 images
                           [3, 3, 3, 3],   # balanced, enough
                           [0, 0, 0, 0]])  # no images: nothing to condition on
    rows = plan(counts, delta1=6, delta2=0.5)
    added = camera_counts(rows[:, 0], rows[:, 1], 4, 4)
    after = counts + added
    n = after.sum(1)
    assert (n[:3] >= 6).all() and (after[:3].amax(1) <= 0.5 * n[:3]).all()
    assert added[2].sum() == 0 and added[3].sum() == 0
    assert added.sum(1).tolist() == needed(counts, 6, 0.5).tolist() == [8, 4, 0, 0]
    assert added[0, 0] == 0  # never the identity's most-seen camera


def test_plan_rejects_impossible_share():
    with pytest.raises(ConfigError, match="delta2"):
        plan(torch.ones(2, 4, dtype=torch.int64), delta1=2, delta2=0.2)


def test_plan_on_synthetic_data_balances_it(tmp_path):
    """The acceptance check on the synthetic layout: after adding the planned images every
    identity has >= delta1 images and no camera holds more than delta2 of them."""
    generate(tmp_path, SyntheticSpec(train_ids=30, test_ids=6, distractors=0, junk=0, seed=3))
    data = load_reid_data(tmp_path, (64, 32))
    counts = camera_counts(data.train.pids, data.train.camids, data.num_train_ids, data.num_cameras)
    before = bias_stats(counts)
    assert before["images_per_id_min"] < 8 and before["camera_share_max"] > 0.6  # the data is biased
    rows = plan(counts, delta1=8, delta2=0.6)
    after = bias_stats(counts + camera_counts(rows[:, 0], rows[:, 1], data.num_train_ids, data.num_cameras))
    assert after["images_per_id_min"] >= 8 and after["camera_share_max"] <= 0.6


def test_written_extension_is_read_by_torchreid_as_training_images(tmp_path):
    """Generated files join a real Market-1501 layout: torchreid's parser reads them as
    training images of the identities and cameras they were made for; query and gallery
    are untouched."""
    root = tmp_path / "data"
    generate(root, SyntheticSpec(train_ids=6, test_ids=4, distractors=0, junk=0, seed=1))
    real = load_reid_data(root, (64, 32))
    train_pids = sorted({int(p.name[:4]) for p in (root / "bounding_box_train").glob("*.jpg")})
    pids = torch.tensor([train_pids[0], train_pids[0], train_pids[3]])
    cams = torch.tensor([2, 3, 0])
    colours = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=torch.uint8)
    images = colours[:, :, None, None].expand(3, 3, 64, 32).contiguous()
    ext = tmp_path / "ext"
    paths = write_layout(ext, images, pids, cams)
    assert [p.name for p in paths] == [generated_name(train_pids[0], 2, 1), generated_name(train_pids[0], 3, 2),
                                       generated_name(train_pids[3], 0, 3)]
    assert paths[0].name == f"{train_pids[0]:04d}_c3s0_000001_01.jpg"
    assert sorted(p.name for p in ext.iterdir()) == ["bounding_box_train"]

    back = read_layout(ext, (64, 32), {pid: label for label, pid in enumerate(train_pids)})
    assert back.pids.tolist() == [0, 0, 3] and back.camids.tolist() == [2, 3, 0]
    assert (back.images.float() - images.float()).abs().max() <= 3  # JPEG round trip

    for p in paths:
        shutil.copy(p, root / "bounding_box_train" / p.name)
    merged = load_reid_data(root, (64, 32))
    assert len(merged.train) == len(real.train) + 3 and merged.num_train_ids == real.num_train_ids
    assert len(merged.query) == len(real.query) and len(merged.gallery) == len(real.gallery)
