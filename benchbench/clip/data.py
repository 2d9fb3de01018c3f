"""Image-caption pairs and labelled evaluation sets as Hugging Face ``datasets``.

User data is read with ``datasets`` from one of three layouts (all offline; docs/data.md
shows each):

- an ``imagefolder``: image files plus ``metadata.jsonl`` / ``metadata.csv`` with a
  ``file_name`` column and a caption column (pairs), or, for an evaluation set, one
  subfolder per class (class names are the folder names), either under ``train/`` and
  ``test/`` or flat (``<class>/``: split per class into train and test images with a seed);
- parquet: one ``.parquet`` file or a folder of them, with an image column
  (``{"bytes", "path"}`` structs, as ``datasets`` writes them) and a caption or label column;
- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.

``check_pairs`` and ``check_labelled`` look at a path's layout and columns without
decoding an image: the grid's pre-flight check (``Task.check_data``), so a wrong path
is one line before any cell runs.

Every image is decoded once when the base data is built (``standardise``): a corrupt
file stops the run with a ``DataError`` that names it, instead of a crash mid-training.
Images are resized (shorter side) and centre-cropped to the model's input size and
stored as PNG, so everything downstream (poisoning, triggers, training, evaluation)
works on one resolution. The whole set is decoded into one uint8 tensor for training:
the right trade-off for the CPU-sized sets this benchmark runs by default. Paper-scale
pairs (WebDataset tar shards, large parquet files) stream instead: ``clip.shards``.
"""
from __future__ import annotations

import csv
import io
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import datasets
import numpy as np
import torch
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder
from PIL import Image

from benchbench.errors import DataError

if TYPE_CHECKING:
    from benchbench.clip.shards import StreamedPairs

IMAGE, CAPTION, LABEL, POISON = "image", "caption", "label", "is_poison"
SHARD = "shard"  # pairs read from tar shards and held in memory: each row's shard (clip.shards)
SPLITS = ("train", "test")  # an evaluation imagefolder's split folders (linear-probe train, test)
METADATA = ("metadata.jsonl", "metadata.csv", "metadata.parquet")  # an imagefolder's captions
IMAGE_SUFFIXES = frozenset(ImageFolder.EXTENSIONS)  # what an imagefolder reads as images
#: Optional column of pairs: which caption template wrote the caption (the synthetic
#: world records it; -1 for captions an attack wrote). Kept when the data has it, so
#: diagnostics can break a defense's behaviour down by caption form.
TEMPLATE = "template"
TEMPLATES_FILE = "templates.json"
DEFAULT_TEMPLATES = ("a photo of a {}.",)


@contextmanager
def quiet() -> Iterator[None]:
    """``datasets`` prints a progress bar per split; the grid has its own display."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def load_any(path: str | Path, cache_dir: str | Path | None = None) -> datasets.DatasetDict:
    """Load ``path`` (imagefolder, parquet or save_to_disk) as a ``DatasetDict``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; give an imagefolder, parquet or save_to_disk path")
    cache = None if cache_dir is None else str(cache_dir)
    with quiet():
        try:
            if path.is_file() and path.suffix == ".parquet":
                loaded = datasets.load_dataset("parquet", data_files=str(path), cache_dir=cache)
            elif (path / "dataset_dict.json").exists() or (path / "state.json").exists():
                loaded = datasets.load_from_disk(str(path))
            elif path.is_dir() and any(path.rglob("*.parquet")):
                loaded = datasets.load_dataset("parquet", data_dir=str(path), cache_dir=cache)
            elif path.is_dir():
                loaded = datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache)
            else:
                raise DataError(f"{path}: not a .parquet file or a folder; give an imagefolder, parquet or "
                                "save_to_disk path")
        except DataError:
            raise
        except Exception as exc:  # datasets raises many types for unreadable layouts
            raise DataError(f"{path}: cannot load as a data set ({type(exc).__name__}: {exc}); see "
                            "benchbench.clip.data for the accepted layouts") from None
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict(train=loaded)


def _require(ds: datasets.Dataset, column: str, param: str, source: Path) -> None:
    if column not in ds.column_names:
        raise DataError(f"{source}: no column '{column}' (columns: {', '.join(ds.column_names)}); "
                        f"set the task param '{param}'")


def decode(value: dict | Image.Image, where: str) -> Image.Image:
    try:
        if isinstance(value, Image.Image):
            image = value
        elif value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        else:
            image = Image.open(value["path"])
        image.load()
        return image.convert("RGB")
    except Exception as exc:  # PIL raises OSError, UnidentifiedImageError, SyntaxError...
        raise DataError(f"{where}: cannot decode image ({type(exc).__name__}: {exc}); fix or remove it") from None


def fit(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and centre-crop (CLIP's eval preprocessing)."""
    w, h = image.size
    if (w, h) == (size, size):
        return image
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def standardise(ds: datasets.Dataset, source: Path, image_column: str, size: int,
                keep: dict[str, str], param: str = "image_column") -> datasets.Dataset:
    """Decode every image (``DataError`` naming a corrupt file), fit it to ``size`` x ``size``,
    and keep only the image column plus ``keep`` (``{source column: new name}``)."""
    _require(ds, image_column, param, source)
    ds = ds.cast_column(image_column, datasets.Image(decode=False))
    images, where = [], lambda i, v: (v.get("path") if isinstance(v, dict) else None) or f"{source} row {i}"
    for i, value in enumerate(ds[image_column]):
        images.append(fit(decode(value, str(where(i, value))), size))
    columns = {new: list(ds[old]) for old, new in keep.items()}
    features = {new: ds.features[old] for old, new in keep.items()}
    return datasets.Dataset.from_dict({IMAGE: images, **columns},
                                      features=datasets.Features({IMAGE: datasets.Image(), **features}))


def load_pairs(path: str | Path, size: int, image_column: str = IMAGE, caption_column: str = CAPTION,
               cache_dir: str | Path | None = None) -> datasets.Dataset:
    """Image-caption pairs from ``path`` as a ``Dataset`` with columns ``image``, ``caption``."""
    path = Path(path)
    dd = load_any(path, cache_dir)
    split = "train" if "train" in dd else next(iter(dd))
    ds = dd[split]
    _require(ds, caption_column, "caption_column", path)
    keep = {caption_column: CAPTION, **({TEMPLATE: TEMPLATE} if TEMPLATE in ds.column_names else {})}
    return standardise(ds, path, image_column, size, keep)


def load_labelled(path: str | Path, size: int, image_column: str = IMAGE, label_column: str = LABEL,
                  cache_dir: str | Path | None = None, split_seed: int = 0,
                  test_fraction: float = 0.5) -> datasets.DatasetDict:
    """A labelled evaluation set: splits ``test`` and ``train`` (for the linear probe),
    columns ``image`` and ``label`` (a ``ClassLabel``: its names are the classes).

    A flat imagefolder (``<class>/`` folders, no ``train/`` or ``test/``) is split per
    class with ``split_seed``, ``test_fraction`` of each class going to ``test``."""
    path = Path(path)
    check_labelled(path, label_column)
    if is_flat_imagefolder(path):
        dd = _split(_imagefolder(path, {"train": "**"}, cache_dir)["train"], path, label_column, split_seed,
                    test_fraction)
    else:
        dd = load_any(path, cache_dir)
    if "test" not in dd:
        raise DataError(f"{path}: no 'test' split (splits: {', '.join(dd)}); put the evaluation images "
                        "under test/<class>/ (and linear-probe images under train/<class>/), or in <class>/ "
                        "folders only, to be split with the task's data_seed")
    out = {}
    for split, ds in dd.items():
        _require(ds, label_column, "eval_label_column", path)
        if not isinstance(ds.features[label_column], datasets.ClassLabel):
            raise DataError(f"{path}: column '{label_column}' is not a ClassLabel; use class subfolders or "
                            "cast it with Dataset.class_encode_column")
        out[split] = standardise(ds, path, image_column, size, {label_column: LABEL}, "eval_image_column")
    return datasets.DatasetDict(out)


def _imagefolder(path: Path, data_files: dict[str, str], cache_dir: str | Path | None) -> datasets.DatasetDict:
    """An imagefolder with the splits named here, not guessed: ``datasets`` takes a folder
    whose name holds a split keyword (``test``, ``eval``, ``dev``, ``val``...) for a split."""
    with quiet():
        try:
            return datasets.load_dataset("imagefolder", data_dir=str(path), data_files=data_files,
                                         cache_dir=None if cache_dir is None else str(cache_dir))
        except Exception as exc:  # datasets raises many types for unreadable layouts
            raise DataError(f"{path}: cannot load as an imagefolder ({type(exc).__name__}: {exc}); see "
                            "docs/data.md for the accepted layouts") from None


def _split(ds: datasets.Dataset, path: Path, label_column: str, seed: int, test_fraction: float
           ) -> datasets.DatasetDict:
    """``train`` and ``test`` from one labelled split, stratified by class."""
    try:
        return ds.train_test_split(test_size=test_fraction, seed=seed, stratify_by_column=label_column)
    except ValueError as exc:  # a class too small to be in both splits
        raise DataError(f"{path}: cannot split the flat folder per class with eval_test_fraction "
                        f"{test_fraction} ({exc}); give every class at least two images, or make "
                        "train/<class>/ and test/<class>/ folders") from None


def is_flat_imagefolder(path: Path) -> bool:
    """A folder of ``<class>/`` image folders (no ``train/`` or ``test/``, not parquet or save_to_disk)."""
    return (path.is_dir() and _kind(path) == "imagefolder" and not any((path / s).is_dir() for s in SPLITS))


def _kind(path: Path) -> str:
    """Which of the accepted layouts ``path`` is, by looking (no data read)."""
    if path.is_file():
        return "parquet" if path.suffix == ".parquet" else "file"
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        return "save_to_disk"
    if any(path.rglob("*.parquet")):
        return "parquet"
    return "imagefolder"


def _images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _columns(path: Path, kind: str) -> list[list[str]]:
    """The column names of each split of a parquet or save_to_disk ``path``."""
    if kind == "save_to_disk":
        loaded = datasets.load_from_disk(str(path))
        splits = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
        return [ds.column_names for ds in splits]
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))[:1]
    return [pq.read_schema(f).names for f in files]


def _exists(path: Path, what: str) -> str:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; give {what}")
    kind = _kind(path)
    if kind == "file":
        raise DataError(f"{path}: not a .parquet file or a folder; give {what}")
    return kind


def check_pairs(path: str | Path, image_column: str = IMAGE, caption_column: str = CAPTION) -> None:
    """Pre-flight check of image-caption pairs: the layout and its caption column."""
    path = Path(path)
    kind = _exists(path, "image-caption pairs: an imagefolder with metadata.jsonl/csv, parquet or a "
                         "save_to_disk folder (docs/data.md)")
    if kind != "imagefolder":
        for columns in _columns(path, kind):
            for column, param in ((image_column, "image_column"), (caption_column, "caption_column")):
                if column not in columns:
                    raise DataError(f"{path}: no column '{column}' (columns: {', '.join(columns)}); "
                                    f"set the task param '{param}'")
        return
    metadata = sorted(f for name in METADATA for f in path.rglob(name))
    if not metadata:
        raise DataError(f"{path}: an imagefolder of pairs needs a metadata.jsonl or metadata.csv with columns "
                        f"file_name and '{caption_column}' next to its images (docs/data.md)")
    columns = _metadata_columns(metadata[0])
    for column in ("file_name", caption_column):
        if columns is not None and column not in columns:
            raise DataError(f"{metadata[0]}: no column '{column}' (columns: {', '.join(columns)}); "
                            + ("name each image in file_name" if column == "file_name"
                               else "set the task param 'caption_column'"))


def _metadata_columns(file: Path) -> list[str] | None:
    """The columns of an imagefolder's metadata file, from its first row (None: parquet,
    left to ``datasets``)."""
    if file.suffix == ".parquet":
        return None
    with open(file, encoding="utf-8-sig", errors="replace") as f:
        first = f.readline()
    if file.suffix == ".csv":
        return next(csv.reader([first]), [])
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        raise DataError(f"{file}: line 1 is not a JSON object; write one object per line, e.g. "
                        '{"file_name": "0001.png", "caption": "a red square"}') from None
    return list(row) if isinstance(row, dict) else []


def check_labelled(path: str | Path, label_column: str = LABEL) -> None:
    """Pre-flight check of a labelled evaluation set: its layout, classes and label column."""
    path = Path(path)
    kind = _exists(path, "a labelled evaluation set: <class>/ folders, train/<class>/ and test/<class>/ "
                         "folders, parquet or a save_to_disk folder (docs/data.md)")
    if kind != "imagefolder":
        for columns in _columns(path, kind):
            if label_column not in columns:
                raise DataError(f"{path}: no column '{label_column}' (columns: {', '.join(columns)}); "
                                f"set the task param 'eval_label_column'")
        return
    if (path / "train").is_dir() and not (path / "test").is_dir():
        raise DataError(f"{path}: no 'test' split (a train/ folder but no test/); add test/<class>/ folders, "
                        "or put every image in <class>/ folders only to have them split with the task's data_seed")
    for folder in [path / s for s in SPLITS if (path / s).is_dir()] or [path]:
        loose = _images(folder)
        if loose:
            raise DataError(f"{loose[0]}: an image outside a class folder; the evaluation set's images go in "
                            f"{folder}/<class>/ folders named after their class")
        classes = [d for d in folder.iterdir() if d.is_dir() and _images(d)]
        if len(classes) < 2:
            raise DataError(f"{folder}: {len(classes)} class folder(s) with images, need at least two "
                            f"(e.g. {folder}/cat/0001.png, {folder}/dog/0001.png); class names are the "
                            "folder names")


def load_templates(path: str | Path) -> tuple[str, ...]:
    """Zero-shot prompt templates from ``templates.json`` next to the eval set, if any."""
    file = Path(path) / TEMPLATES_FILE
    if not file.is_file():
        return DEFAULT_TEMPLATES
    templates = json.loads(file.read_text())
    if not (isinstance(templates, list) and templates and all(isinstance(t, str) and "{}" in t
                                                              for t in templates)):
        raise DataError(f"{file}: must be a JSON list of strings each containing '{{}}'")
    return tuple(templates)


def to_uint8(images: list[Image.Image] | datasets.Dataset) -> torch.Tensor:
    """Decoded PIL images (or a dataset's ``image`` column) -> uint8 tensor (N, 3, S, S)."""
    if isinstance(images, datasets.Dataset):
        images = list(images[IMAGE])
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(0, 3, 1, 2)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """uint8 tensor (N, 3, S, S) -> PIL images (to write poisoned rows back to a dataset)."""
    return [Image.fromarray(a) for a in images.permute(0, 2, 3, 1).numpy()]


@dataclass
class Labelled:
    """An evaluation split in memory: uint8 images, integer labels and class names."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) long
    classes: tuple[str, ...]

    @classmethod
    def from_dataset(cls, ds: datasets.Dataset) -> "Labelled":
        return cls(to_uint8(ds), torch.tensor(list(ds[LABEL]), dtype=torch.long), tuple(ds.features[LABEL].names))


def class_names(ds: datasets.Dataset) -> tuple[str, ...]:
    return tuple(ds.features[LABEL].names)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _png(image: Image.Image) -> dict:
    return {"bytes": png_bytes(image), "path": None}


def edit_pairs(ds: "datasets.Dataset | StreamedPairs", replace: dict[int, tuple[Image.Image, str]],
               add: list[tuple[Image.Image, str]]) -> "datasets.Dataset | StreamedPairs":
    """Pairs with rows ``replace``d and rows ``add``ed, flagged in ``is_poison`` (and, when
    the pairs have a ``template`` column, with template -1: an attack wrote the caption;
    when they have a ``shard`` column, added pairs in one more shard, as a stream has them).

    Works on the encoded images, so untouched rows are copied, not decoded again.
    Streamed pairs (``clip.shards.StreamedPairs``) are not copied: they come back with
    the edits as an overlay the stream applies as it reads.
    """
    if not isinstance(ds, datasets.Dataset):
        return ds.edited(replace, add)
    images = list(ds.cast_column(IMAGE, datasets.Image(decode=False))[IMAGE])
    captions = list(ds[CAPTION])
    flags = [False] * len(ds)
    templates = list(ds[TEMPLATE]) if TEMPLATE in ds.column_names else None
    shards = list(ds[SHARD]) if SHARD in ds.column_names else None
    for row, (image, caption) in replace.items():
        images[row], captions[row], flags[row] = _png(image), caption, True
    images += [_png(image) for image, _ in add]
    captions += [caption for _, caption in add]
    flags += [True] * len(add)
    columns = {IMAGE: images, CAPTION: captions, POISON: flags}
    features = {IMAGE: datasets.Image(), CAPTION: datasets.Value("string"), POISON: datasets.Value("bool")}
    if templates is not None:
        for row in replace:
            templates[row] = -1
        columns[TEMPLATE] = templates + [-1] * len(add)
        features[TEMPLATE] = datasets.Value("int64")
    if shards is not None:
        columns[SHARD] = shards + [max(shards, default=-1) + 1] * len(add)
        features[SHARD] = datasets.Value("int64")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))
