"""The synthetic generator writes Market-1501's layout; torchreid reads it back; bad
user folders fail with one-line DataErrors naming the file."""
from __future__ import annotations

import collections
import hashlib
import re
import shutil
from dataclasses import replace

import pytest
import torch

from benchbench.errors import DataError
from benchbench.reid.data import load_reid_data
from benchbench.reid.synthetic import SPLIT_DIRS, generate

from .conftest import TINY

MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s\d_\d{6}_\d{2}\.jpg$")


def _digest(root):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*.jpg")))).hexdigest()


def test_layout_names_junk_and_distractors(tiny_root):
    names = {split: [p.name for p in (tiny_root / d).glob("*.jpg")] for split, d in SPLIT_DIRS.items()}
    assert all(MARKET_NAME.match(n) for ns in names.values() for n in ns)
    gallery_ids = collections.Counter(n.split("_")[0] for n in names["gallery"])
    assert gallery_ids["-1"] == TINY.junk and gallery_ids["0000"] == TINY.distractors
    train_ids = {n.split("_")[0] for n in names["train"]}
    test_ids = {n.split("_")[0] for n in names["query"]}
    assert len(train_ids) == TINY.train_ids and not train_ids & test_ids


def test_counts_are_uneven_per_identity_and_camera(tmp_path):
    spec = replace(TINY, train_ids=40, test_ids=2, cameras=4, mean_images_per_id=10)
    generate(tmp_path, spec)
    names = [p.name for p in (tmp_path / SPLIT_DIRS["train"]).glob("*.jpg")]
    per_id = collections.defaultdict(collections.Counter)
    for n in names:
        per_id[n[:4]][n.split("_")[1][:2]] += 1
    sizes = [sum(c.values()) for c in per_id.values()]
    assert max(sizes) >= 3 * min(sizes)  # a long tail of identities
    per_cam = collections.Counter(n.split("_")[1][:2] for n in names)
    assert max(per_cam.values()) > 2 * min(per_cam.values())  # busy and quiet cameras
    dominant = [max(c.values()) / sum(c.values()) for c in per_id.values()]
    assert sum(d > 0.6 for d in dominant) >= len(dominant) / 4  # identities seen mostly by one camera


def test_deterministic(tmp_path, tiny_root):
    generate(tmp_path, TINY)
    assert _digest(tmp_path) == _digest(tiny_root)


def test_read_back_through_torchreid(tiny_root):
    data = load_reid_data(tiny_root, (32, 16))
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 32, 16)
    assert data.num_train_ids == TINY.train_ids
    assert sorted(data.train.pids.unique().tolist()) == list(range(TINY.train_ids))  # relabelled
    assert -1 not in data.gallery.pids.tolist()  # junk dropped, as torchreid's Market1501 does
    assert 0 in data.gallery.pids.tolist()  # distractors kept
    assert data.num_cameras == TINY.cameras
    # every query has a gallery match from another camera
    for pid, cam in zip(data.query.pids, data.query.camids):
        assert ((data.gallery.pids == pid) & (data.gallery.camids != cam)).any()
    assert load_reid_data(tiny_root, (64, 32)).query.images.shape[-2:] == (64, 32)  # resized


@pytest.fixture
def user_copy(tmp_path, tiny_root):
    root = tmp_path / "mine"
    shutil.copytree(tiny_root, root)
    return root


@pytest.mark.parametrize("breakage, message", [
    (lambda r: shutil.rmtree(r / "query"), "lacks query"),
    (lambda r: (r / "query" / "IMG_0001.jpg").write_bytes(b"x"), "IMG_0001.jpg: name does not start"),
    (lambda r: (r / "query" / "0001_c9s1_000001_01.jpg").write_bytes(b"x"), "camera 9 is outside 1..6"),
    (lambda r: (r / "query" / "0001_c1s1_000001_01.jpg").write_bytes(b"not a jpeg"), "cannot decode"),
])
def test_bad_user_folder(user_copy, breakage, message):
    breakage(user_copy)
    with pytest.raises(DataError, match=message):
        load_reid_data(user_copy, (32, 16))


def test_missing_root_and_nested_layout(tmp_path, tiny_root):
    with pytest.raises(DataError, match="is not a folder"):
        load_reid_data(tmp_path / "nowhere", (32, 16))
    nested = tmp_path / "market1501" / "Market-1501-v15.09.15"
    shutil.copytree(tiny_root, nested)
    assert len(load_reid_data(tmp_path, (32, 16)).query) > 0


def test_dukemtmc_layout(tmp_path, tiny_root):
    """DukeMTMC-reID names (0001_c2_f0046182.jpg, cameras up to 8, no junk) under its own nesting."""
    base = tmp_path / "dukemtmc-reid" / "DukeMTMC-reID"
    for split in SPLIT_DIRS.values():
        (base / split).mkdir(parents=True)
        for i, f in enumerate(sorted((tiny_root / split).glob("*.jpg"))):
            pid, cam = f.name.split("_")[:2]
            if pid != "-1":
                shutil.copy(f, base / split / f"{pid}_{cam[:2]}_f{i:07d}.jpg")
    data = load_reid_data(tmp_path, (32, 16), layout="dukemtmcreid")
    assert data.num_train_ids == TINY.train_ids and len(data.query) > 0
    with pytest.raises(DataError, match="camera 7 is outside 1..6"):
        (base / "query" / "0001_c7_f0000001.jpg").write_bytes(b"")
        load_reid_data(tmp_path, (32, 16), layout="market1501")
