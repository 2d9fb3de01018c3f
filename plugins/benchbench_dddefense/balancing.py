"""Data balancing: measure the bias of a training set, plan what to generate, write it.

Two biases (DDDefense, Zhou et al. 2026) are measured per training identity i with n_i
images and n_{i,c} images from camera c:

- inter-identity: identities with few images (n_i < delta1) are learnt worse;
- intra-identity: an identity seen mostly by one camera (largest share
  max_c n_{i,c} / n_i > delta2) is learnt with that camera's look.

``plan`` lists the (identity, camera) pairs to generate so that afterwards every
identity has >= delta1 images and a largest camera share <= delta2: each new image goes
to the identity's least-seen camera (cameras it was never seen by first), which is the
fewest images that meet both bounds (adding to the least-seen camera never raises the
largest count while the bounds still bind).

Generated images are written as a Market-1501-layout extension of the training set:
``bounding_box_train/PPPP_cCsS_FFFFFF_NN.jpg`` with the identity and camera each image
was made for and the sequence number ``s0`` (real Market-1501 sequences start at 1), so
torchreid's parser reads them like real training images, and a reader can tell them
apart. Nothing is ever written to ``query/`` or ``bounding_box_test/``.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from PIL import Image

from benchbench.errors import ConfigError
from benchbench.reid.data import ImageSet, read_split

TRAIN_DIR = "bounding_box_train"
GENERATED_SEQUENCE = 0  # the ``s`` field of generated file names
GENERATED_NAME = re.compile(r"^(\d+)_c(\d)s0_(\d{6})_(\d{2})\.jpg$")


def camera_counts(pids: torch.Tensor, camids: torch.Tensor, num_ids: int, num_cams: int) -> torch.Tensor:
    """(num_ids, num_cams) table of image counts n_{i,c}."""
    return torch.bincount(pids * num_cams + camids, minlength=num_ids * num_cams).view(num_ids, num_cams)


def bias_stats(counts: torch.Tensor) -> dict[str, float]:
    """Summary of a count table: images per identity and largest camera share."""
    n = counts.sum(1)
    seen = n > 0
    share = counts[seen].amax(1).double() / n[seen]
    per_id = n[seen].double()
    return {"images_per_id_min": float(per_id.min()), "images_per_id_max": float(per_id.max()),
            "images_per_id_mean": float(per_id.mean()), "images_per_id_var": float(per_id.var(unbiased=False)),
            "camera_share_max": float(share.max()), "camera_share_mean": float(share.mean())}


def plan(counts: torch.Tensor, delta1: int, delta2: float) -> torch.Tensor:
    """(M, 2) long tensor of (identity, camera) pairs to generate, one row per image.

    ``delta1``: minimum images per identity; ``delta2``: maximum share of an identity's
    images that one camera may hold (at least 1 / number of cameras, else no number of
    images can reach it).
    """
    num_cams = counts.shape[1]
    if not 1.0 / num_cams <= delta2 <= 1.0:
        raise ConfigError(f"delta2={delta2} must lie in [1/{num_cams}, 1]: with {num_cams} cameras no "
                          f"identity can have a largest camera share below 1/{num_cams}")
    if delta1 < 0:
        raise ConfigError(f"delta1={delta1} must be >= 0 (minimum images per identity)")
    rows = []
    for pid, row in enumerate(counts.tolist()):
        if sum(row) == 0:
            continue  # an identity without images has nothing to condition on
        while sum(row) < delta1 or max(row) > delta2 * sum(row) + 1e-9:
            cam = min(range(num_cams), key=lambda c: (row[c], c))
            row[cam] += 1
            rows.append((pid, cam))
    return torch.tensor(rows, dtype=torch.int64).view(-1, 2)


def needed(counts: torch.Tensor, delta1: int, delta2: float) -> torch.Tensor:
    """Per identity, the fewest images that meet both bounds (what ``plan`` must add)."""
    n, largest = counts.sum(1), counts.amax(1)
    by_share = torch.tensor([math.ceil(m / delta2 - 1e-9) for m in largest.tolist()]) - n
    return torch.where(n > 0, torch.maximum(delta1 - n, by_share).clamp_min(0), 0)


def generated_name(pid: int, camid: int, frame: int) -> str:
    """Market-1501 file name of a generated image (``camid`` 0-based, as torchreid's)."""
    return f"{pid:04d}_c{camid + 1}s{GENERATED_SEQUENCE}_{frame:06d}_01.jpg"


def write_layout(root: Path, images: torch.Tensor, pids: torch.Tensor, camids: torch.Tensor,
                 quality: int = 95) -> list[Path]:
    """Write uint8 images as ``root/bounding_box_train/<generated_name>``; ``pids`` are
    the data set's identity numbers (not training labels)."""
    out = root / TRAIN_DIR
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame, (img, pid, cam) in enumerate(zip(images, pids.tolist(), camids.tolist()), start=1):
        path = out / generated_name(pid, cam, frame)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(path, quality=quality, subsampling=0)
        paths.append(path)
    return paths


def layout_files(root: Path) -> list[Path]:
    """The images of a written extension, in the order ``read_layout`` reads them."""
    return sorted((root / TRAIN_DIR).glob("*.jpg"))


def read_layout(root: Path, size: tuple[int, int], pid_to_label: dict[int, int],
                keep: set[str] | None = None) -> ImageSet:
    """Read a written extension back through the data layer (only the file names in
    ``keep``, if given); identities become the training labels of ``pid_to_label``."""
    files = [f for f in layout_files(root) if keep is None or f.name in keep]
    items = []
    for path in files:
        m = GENERATED_NAME.match(path.name)
        if m is None:
            raise ValueError(f"{path}: not a generated image name ({generated_name(1, 0, 1)} is one)")
        items.append((str(path), pid_to_label[int(m.group(1))], int(m.group(2)) - 1, 0))
    if not items:
        return ImageSet(torch.empty(0, 3, *size, dtype=torch.uint8), torch.empty(0, dtype=torch.int64),
                        torch.empty(0, dtype=torch.int64))
    return read_split(items, size)
