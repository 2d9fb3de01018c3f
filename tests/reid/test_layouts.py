"""DukeMTMC-reID and MSMT17 layouts (issue #12 item 5): the generator writes them, torchreid's
own dataset classes read them as we do, and bad folders fail with one line naming the fix."""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace

import pytest

from benchbench.errors import DataError
from benchbench.reid.data import LayoutDataset, load_reid_data
from benchbench.reid.synthetic import generate

from .conftest import TINY

SIZE = (32, 16)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """The tiny world in each layout, under torchreid's own nesting for the two new ones."""
    root = tmp_path_factory.mktemp("layouts")
    paths = {"market1501": root / "market", "dukemtmcreid": root / "duke" / "dukemtmc-reid" / "DukeMTMC-reID",
             "msmt17": root / "msmt" / "msmt17" / "MSMT17_V1"}
    for layout, path in paths.items():
        generate(path, TINY, layout)
    return paths


def _content(images, pids, camids) -> list[tuple]:
    """A split as a sorted list of (id, camera, image digest): equal whatever the file names."""
    return sorted((int(p), int(c), hashlib.sha256(im.numpy().tobytes()).hexdigest())
                  for im, p, c in zip(images, pids, camids))


def test_default_layout_unchanged_by_the_layout_argument(tmp_path, tiny_root):
    generate(tmp_path, TINY, "market1501")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == \
        sorted(p.relative_to(tiny_root) for p in tiny_root.rglob("*"))
    assert all((tmp_path / p.relative_to(tiny_root)).read_bytes() == p.read_bytes()
               for p in tiny_root.rglob("*") if p.is_file())


@pytest.mark.parametrize("layout", ["dukemtmcreid", "msmt17"])
def test_every_layout_reads_back_the_same_world(worlds, layout):
    market = load_reid_data(worlds["market1501"], SIZE)
    other = load_reid_data(worlds[layout].parent.parent, SIZE, layout)  # torchreid's nesting is found
    for split in ("train", "query", "gallery"):
        a, b = getattr(market, split), getattr(other, split)
        assert _content(a.images, a.pids, a.camids) == _content(b.images, b.pids, b.camids), split
    assert other.num_train_ids == TINY.train_ids


@pytest.mark.parametrize("layout", ["dukemtmcreid", "msmt17"])
def test_torchreid_dataset_classes_read_what_we_wrote(worlds, layout):
    """torchreid's own class on the generated folder parses what ``LayoutDataset`` parses."""
    from torchreid.reid.data.datasets.image.dukemtmcreid import DukeMTMCreID
    from torchreid.reid.data.datasets.image.msmt17 import MSMT17

    theirs = {"dukemtmcreid": DukeMTMCreID, "msmt17": MSMT17}[layout](root=str(worlds[layout].parent.parent))
    ours = LayoutDataset(worlds[layout], layout)
    for split in ("query", "gallery"):
        assert sorted(t[:3] for t in getattr(theirs, split)) == [t[:3] for t in getattr(ours, split)]
    # training ids: torchreid relabels in set order, we in ascending order; the images and cameras agree
    assert sorted((p, c) for p, _, c, *_ in theirs.train) == [(p, c) for p, _, c, *_ in ours.train]
    assert theirs.num_train_pids == ours.num_train_pids == TINY.train_ids


def test_msmt17_names_and_lists(worlds):
    base = worlds["msmt17"]
    lines = (base / "list_query.txt").read_text().splitlines()
    path, pid = lines[0].split(" ")
    assert (base / "test" / path).is_file() and path.startswith(f"{int(pid):04d}/")
    assert int(path.split("_")[2]) in range(1, TINY.cameras + 1)
    assert not list(base.rglob("-1_*"))  # no junk: MSMT17 has none
    assert (base / "list_val.txt").read_text() == ""  # torchreid's class opens it


def test_cross_data_set_split_sources(worlds, tmp_path):
    other = tmp_path / "seed1"
    generate(other, replace(TINY, seed=1), "dukemtmcreid")
    market = load_reid_data(worlds["market1501"], SIZE)
    duke = load_reid_data(other, SIZE, "dukemtmcreid")
    cross = load_reid_data(worlds["market1501"], SIZE, eval_root=other, eval_layout="dukemtmcreid")
    assert cross.train.images.equal(market.train.images) and cross.num_train_ids == market.num_train_ids
    assert cross.query.images.equal(duke.query.images) and cross.gallery.pids.equal(duke.gallery.pids)
    assert not cross.query.images.equal(market.query.images[:len(cross.query)])


@pytest.fixture
def msmt_copy(tmp_path, worlds):
    root = tmp_path / "MSMT17_V1"
    shutil.copytree(worlds["msmt17"], root)
    return root


def _append(file, line):
    with open(file, "a") as f:
        f.write(line)


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "list_gallery.txt").unlink(), "lacks list_gallery.txt"),
    (lambda r: _append(r / "list_query.txt", "0001/x.jpg\n"), "line .*: expected '<image path> <person id>'"),
    (lambda r: _append(r / "list_query.txt", "\n"), "line .*: expected"),
    (lambda r: _append(r / "list_query.txt", "0001/0001_000_99_0113morning_0015_0.jpg 1\n"),
     "does not give a camera 01..15"),
    (lambda r: _append(r / "list_train.txt", "0001/0001_000_01_0113morning_0015_0.jpg 1\n"), "does not exist"),
])
def test_bad_msmt17_folder(msmt_copy, breakage, message):
    breakage(msmt_copy)
    with pytest.raises(DataError, match=message):
        load_reid_data(msmt_copy, SIZE, "msmt17")


def test_wrong_layout_names_the_right_one(worlds):
    with pytest.raises(DataError, match="it holds the msmt17 layout: set the task param layout: msmt17"):
        load_reid_data(worlds["msmt17"], SIZE, "market1501")
    with pytest.raises(DataError, match="it holds the market1501 layout: set the task param layout: market1501"):
        load_reid_data(worlds["market1501"], SIZE, "msmt17")


def test_layout_camera_limits():
    with pytest.raises(ValueError, match="cameras must be 2..6"):
        generate("/nonexistent", replace(TINY, cameras=8))
    with pytest.raises(ValueError, match="cameras must be 2..8"):
        generate("/nonexistent", replace(TINY, cameras=9), "dukemtmcreid")
