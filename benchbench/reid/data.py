"""Market-1501 / DukeMTMC-reID folders, read through torchreid, held as tensors.

torchreid's dataset classes parse the layouts (file-name pattern, relabelling of
training ids, junk id -1 dropped for Market-1501, cameras 0-based); ``LayoutDataset``
borrows their ``process_dir`` so a user can point ``data_root`` at any folder holding
``bounding_box_train/``, ``query/`` and ``bounding_box_test/`` (or torchreid's own
``market1501/Market-1501-v15.09.15`` / ``dukemtmc-reid/DukeMTMC-reID`` nesting). Every
split is sorted by file name, so the numbers do not depend on the filesystem's listing order.

Before torchreid sees the files, every name is checked here, because torchreid asserts
(or, for an unreadable image, retries forever) where a user needs a one-line
``DataError`` naming the file. Images are then decoded once into uint8 tensors of one
size: ReID images are small and a whole split fits in memory, which makes CPU training
and attacks fast and deterministic (no loader workers).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from benchbench.errors import DataError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torchreid warns that its Cython ranker is missing
    from torchreid.reid.data.datasets.dataset import ImageDataset
    from torchreid.reid.data.datasets.image.dukemtmcreid import DukeMTMCreID
    from torchreid.reid.data.datasets.image.market1501 import Market1501

Layout = Literal["market1501", "dukemtmcreid"]
SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")
NESTED = ("", "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501",
          "DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID")
NAME = re.compile(r"^(-1|\d+)_c(\d)")  # torchreid's pattern, anchored at the start
CAMERAS = {"market1501": 6, "dukemtmcreid": 8}
PARSERS = {"market1501": Market1501.process_dir, "dukemtmcreid": DukeMTMCreID.process_dir}


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
    """A Market-1501- or DukeMTMC-reID-layout folder as a torchreid ``ImageDataset``."""

    def __init__(self, root: str | Path, layout: Layout = "market1501", **kwargs):
        base = find_layout_root(root)
        check_names(base, layout)
        train, query, gallery = (self._parse(base / d, layout, relabel=(d == SPLIT_DIRS[0])) for d in SPLIT_DIRS)
        if not train or not query or not gallery:
            raise DataError(f"{base}: a split is empty after dropping junk images; "
                            f"each of {', '.join(SPLIT_DIRS)} needs identities")
        super().__init__(train, query, gallery, verbose=False, **kwargs)

    def _parse(self, folder: Path, layout: Layout, relabel: bool) -> list[tuple]:
        """torchreid's parse of one split, in file-name order, training ids relabelled in
        ascending order. torchreid keeps its unsorted ``glob`` order (the filesystem's:
        the same folder on ext4 and tmpfs gave different numbers) and relabels in set order."""
        items = sorted(PARSERS[layout](self, str(folder), relabel=False))
        if not relabel:
            return items
        labels = {pid: label for label, pid in enumerate(sorted({pid for _, pid, _ in items}))}
        return [(path, labels[pid], camid) for path, pid, camid in items]


def find_layout_root(root: str | Path) -> Path:
    """The folder under ``root`` that holds the three split folders."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data_root {root} is not a folder (point it at a Market-1501-layout "
                        f"folder with {', '.join(SPLIT_DIRS)})")
    for sub in NESTED:
        if all((root / sub / d).is_dir() for d in SPLIT_DIRS):
            return root / sub
    missing = [d for d in SPLIT_DIRS if not (root / d).is_dir()]
    raise DataError(f"{root} lacks {', '.join(missing)}: a Market-1501/DukeMTMC-reID layout "
                    f"needs {', '.join(SPLIT_DIRS)} (file names like 0002_c1s1_000451_03.jpg)")


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


def load_reid_data(root: str | Path, size: tuple[int, int], layout: Layout = "market1501") -> ReidData:
    """Read a layout folder into memory at ``size`` = (height, width)."""
    ds = LayoutDataset(root, layout)
    train, query, gallery = (read_split(items, size) for items in (ds.train, ds.query, ds.gallery))
    cameras = int(torch.cat([train.camids, query.camids, gallery.camids]).max()) + 1
    data = ReidData(train, query, gallery, num_train_ids=ds.num_train_pids, num_cameras=cameras)
    q_ids, g_ids = set(data.query.pids.tolist()), set(data.gallery.pids.tolist())
    if not q_ids & g_ids:
        raise DataError(f"{root}: no query identity appears in bounding_box_test; "
                        f"queries need gallery images of the same person")
    return data
