"""Market-1501, DukeMTMC-reID and MSMT17 folders, read through torchreid, held as tensors.

torchreid's dataset classes parse the layouts: Market-1501's and DukeMTMC-reID's file
names (``0002_c1s1_000451_03.jpg``, ``0001_c2_f0046182.jpg``; junk id -1 dropped for
Market-1501, cameras 0-based) and MSMT17's list files (``list_train.txt``,
``list_query.txt``, ``list_gallery.txt``: lines ``<path> <id>``, the camera in the file
name). ``LayoutDataset`` borrows their ``process_dir`` so a user can point ``data_root``
at any folder in one of the layouts, or at torchreid's own nesting
(``market1501/Market-1501-v15.09.15``, ``dukemtmc-reid/DukeMTMC-reID``,
``msmt17/MSMT17_V1``); torchreid's constructors insist on that nesting under a root and
try to download what is missing. Every split is sorted by file name, so the numbers do
not depend on the filesystem's listing order. docs/data.md lists every accepted layout.

Before torchreid sees the files, every name (or list line) is checked here, because
torchreid asserts (or, for an unreadable image, retries forever) where a user needs a
one-line ``DataError`` naming the file; ``check_layout`` is also the grid's pre-flight
check (``Task.check_data``). Images are then decoded once into uint8 tensors of one
size: ReID images are small and a whole split fits in memory, which makes CPU training
and attacks fast and deterministic (no loader workers).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from benchbench.errors import DataError
from benchbench.reid.layouts import CAMERAS, LAYOUTS, MSMT_LISTS, SPLIT_DIRS, Layout

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torchreid warns that its Cython ranker is missing
    from torchreid.reid.data.datasets.dataset import ImageDataset
    from torchreid.reid.data.datasets.image.dukemtmcreid import DukeMTMCreID
    from torchreid.reid.data.datasets.image.market1501 import Market1501
    from torchreid.reid.data.datasets.image.msmt17 import MSMT17, TEST_DIR_KEY, TRAIN_DIR_KEY, VERSION_DICT

NESTED = ("", "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501",
          "DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID")
MSMT_NESTED = ("", *VERSION_DICT, *(f"msmt17/{version}" for version in VERSION_DICT))
NAME = re.compile(r"^(-1|\d+)_c(\d)")  # torchreid's pattern, anchored at the start
PARSERS = {"market1501": Market1501.process_dir, "dukemtmcreid": DukeMTMCreID.process_dir}
NEEDS = {"market1501": f"{', '.join(SPLIT_DIRS)} (file names like 0002_c1s1_000451_03.jpg)",
         "dukemtmcreid": f"{', '.join(SPLIT_DIRS)} (file names like 0001_c2_f0046182.jpg)",
         "msmt17": f"{', '.join(MSMT_LISTS)} and train/ + test/ (MSMT17_V1) or mask_train_v2/ + "
                   f"mask_test_v2/ (MSMT17_V2)"}


@dataclass
class ImageSet:
    """One split: ``images`` uint8 (N, 3, H, W); ``pids`` and ``camids`` int64 (N,).

    Training ``pids`` are relabelled 0..C-1 (classifier targets); query and gallery
    keep the file's identity (0 = distractor)."""

    images: torch.Tensor
    pids: torch.Tensor
    camids: torch.Tensor

    def __len__(self) -> int:
        return len(self.pids)

    def floats(self, index=slice(None)) -> torch.Tensor:
        """Images in [0, 1] (the space attacks and models work in)."""
        return self.images[index].float().div_(255)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.pids[index], self.camids[index])

    def concat(self, other: "ImageSet") -> "ImageSet":
        """This set plus ``other`` (e.g. generated images added by a defense)."""
        return ImageSet(torch.cat([self.images, other.images]), torch.cat([self.pids, other.pids]),
                        torch.cat([self.camids, other.camids]))


@dataclass
class ReidData:
    train: ImageSet
    query: ImageSet
    gallery: ImageSet
    num_train_ids: int
    num_cameras: int


class LayoutDataset(ImageDataset):
    """A folder in one of ``LAYOUTS`` as a torchreid ``ImageDataset``.

    ``train_names`` maps each training label to the data set's own identity number."""

    def __init__(self, root: str | Path, layout: Layout = "market1501", **kwargs):
        base = find_layout_root(root, layout)
        check_layout(base, layout)
        if layout == "msmt17":
            splits = [MSMT17.process_dir(self, str(folder), str(base / name))
                      for folder, name in zip(msmt_folders(base), MSMT_LISTS)]
        else:
            splits = [PARSERS[layout](self, str(base / d), relabel=False) for d in SPLIT_DIRS]
        # torchreid keeps its unsorted ``glob`` order (the filesystem's: the same folder on
        # ext4 and tmpfs gave different numbers) and relabels in set order: sort, then
        # relabel training ids in ascending order
        train, query, gallery = (sorted(items) for items in splits)
        if not train or not query or not gallery:
            raise DataError(f"{base}: a split is empty after dropping junk images; train, query and "
                            f"gallery all need identities")
        self.train_names = dict(enumerate(sorted({pid for _, pid, _ in train})))
        labels = {pid: label for label, pid in self.train_names.items()}
        train = [(path, labels[pid], camid) for path, pid, camid in train]
        super().__init__(train, query, gallery, verbose=False, **kwargs)


def msmt_dirs(base: Path) -> tuple[Path, Path] | None:
    """MSMT17's (train, test) image folders under ``base`` (V1 or V2 names), if present."""
    for dirs in VERSION_DICT.values():
        train, test = base / dirs[TRAIN_DIR_KEY], base / dirs[TEST_DIR_KEY]
        if train.is_dir() and test.is_dir():
            return train, test
    return None


def msmt_folders(base: Path) -> tuple[Path, Path, Path]:
    """The image folder of each of ``MSMT_LISTS``: train, test, test."""
    train, test = msmt_dirs(base)
    return train, test, test


def _holds(base: Path, layout: str) -> bool:
    if layout == "msmt17":
        return all((base / f).is_file() for f in MSMT_LISTS) and msmt_dirs(base) is not None
    return all((base / d).is_dir() for d in SPLIT_DIRS)


def _nesting(layout: str) -> tuple[str, ...]:
    return MSMT_NESTED if layout == "msmt17" else NESTED


def find_layout_root(root: str | Path, layout: Layout = "market1501") -> Path:
    """The folder under ``root`` that holds ``layout``'s split folders (and list files)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data_root {root} is not a folder (point it at a {layout} folder with {NEEDS[layout]})")
    for sub in _nesting(layout):
        if _holds(root / sub, layout):
            return root / sub
    other = next((o for o in LAYOUTS if any(_holds(root / sub, o) for sub in _nesting(o))), None)
    hint = f"; it holds the {other} layout: set the task param layout: {other}" if other else ""
    if layout == "msmt17":
        missing = [f for f in MSMT_LISTS if not (root / f).is_file()] + ([] if msmt_dirs(root) else ["train/ + test/"])
    else:
        missing = [d for d in SPLIT_DIRS if not (root / d).is_dir()]
    raise DataError(f"{root} lacks {', '.join(missing)}: a {layout} layout needs {NEEDS[layout]}{hint}")


def check_layout(base: Path, layout: Layout) -> None:
    """Every file name (Market-1501, DukeMTMC-reID) or list line (MSMT17) torchreid will
    parse, checked for what torchreid would assert or crash on."""
    if layout == "msmt17":
        check_lists(base)
    else:
        check_names(base, layout)


def check_names(base: Path, layout: Layout) -> None:
    max_cam = CAMERAS[layout]
    for d in SPLIT_DIRS:
        files = sorted((base / d).glob("*.jpg"))
        if not files:
            raise DataError(f"{base / d} holds no .jpg images")
        for f in files:
            m = NAME.match(f.name)
            if not m:
                raise DataError(f"{f}: name does not start with <person id>_c<camera> "
                                f"(e.g. 0002_c1s1_000451_03.jpg); rename or remove it")
            pid, cam = int(m.group(1)), int(m.group(2))
            if not 1 <= cam <= max_cam:
                raise DataError(f"{f}: camera {cam} is outside 1..{max_cam} for layout '{layout}'")
            if layout == "market1501" and pid > 1501:
                raise DataError(f"{f}: Market-1501 ids are -1..1501; use layout 'dukemtmcreid' "
                                f"for larger ids")


def check_lists(base: Path) -> None:
    """MSMT17's list files as torchreid's ``MSMT17.process_dir`` reads them: each line
    ``<path under train/ (or test/)> <id>`` split on one space, the camera the third
    ``_`` field of the path (``0000/0000_000_01_0303morning_0015_0.jpg``), the image there."""
    for folder, name in zip(msmt_folders(base), MSMT_LISTS):
        lines = (base / name).read_text(errors="replace").splitlines()
        if not lines:
            raise DataError(f"{base / name} lists no images")
        for n, line in enumerate(lines, 1):
            where, parts = f"{base / name} line {n}", line.split(" ")
            if len(parts) != 2 or not parts[1].strip().isdigit():
                raise DataError(f"{where}: expected '<image path> <person id>' separated by one space "
                                f"(e.g. 0000/0000_000_01_0303morning_0015_0.jpg 0), got {line!r}")
            fields = parts[0].split("_")
            if len(fields) < 3 or not fields[2].isdigit() or not 1 <= int(fields[2]) <= CAMERAS["msmt17"]:
                raise DataError(f"{where}: {parts[0]} does not give a camera 01..15 as its third '_' field "
                                f"(e.g. 0000/0000_000_01_0303morning_0015_0.jpg)")
            if not (folder / parts[0]).is_file():
                raise DataError(f"{where}: {folder / parts[0]} does not exist; add the image or fix the line")


def read_split(items: list[tuple], size: tuple[int, int]) -> ImageSet:
    """Decode a torchreid item list ``(path, pid, camid, dsetid)`` into an ``ImageSet``."""
    images = torch.empty(len(items), 3, *size, dtype=torch.uint8)
    for i, (path, *_rest) in enumerate(items):
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{path}: cannot decode the image ({exc}); replace or remove it") from None
        if img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        images[i] = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    pids = torch.tensor([it[1] for it in items], dtype=torch.int64)
    camids = torch.tensor([it[2] for it in items], dtype=torch.int64)
    return ImageSet(images, pids, camids)


def load_reid_data(root: str | Path, size: tuple[int, int], layout: Layout = "market1501",
                   eval_root: str | Path | None = None, eval_layout: Layout = "market1501") -> ReidData:
    """Read a layout folder into memory at ``size`` = (height, width).

    With ``eval_root`` (the cross-data-set protocol) the training split comes from
    ``root`` and the query and gallery from ``eval_root``, in its own ``eval_layout``."""
    ds = LayoutDataset(root, layout)
    test = ds if eval_root is None else LayoutDataset(eval_root, eval_layout)
    train = read_split(ds.train, size)
    query, gallery = read_split(test.query, size), read_split(test.gallery, size)
    cameras = int(torch.cat([train.camids, query.camids, gallery.camids]).max()) + 1
    data = ReidData(train, query, gallery, num_train_ids=ds.num_train_pids, num_cameras=cameras)
    q_ids, g_ids = set(data.query.pids.tolist()), set(data.gallery.pids.tolist())
    if not q_ids & g_ids:
        raise DataError(f"{root if eval_root is None else eval_root}: no query identity appears in the gallery; "
                        f"queries need gallery images of the same person")
    return data
