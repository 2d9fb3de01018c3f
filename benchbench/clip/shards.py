"""Image-caption shards, streamed: the CLIP track's paper-scale data path.

img2dataset writes CC3M, CC12M or LAION as WebDataset tar shards of ``{key}.jpg|png``
(or webp) next to ``{key}.txt`` and/or ``{key}.json`` (``{"caption": ...}``); Hugging
Face data sets come as parquet files. The task's ``data`` param takes tar shards as a
brace pattern (``/data/cc3m/{00000..00331}.tar``, expanded by webdataset), one ``.tar``
or a folder of ``.tar`` files, and parquet as a file or a folder of them (streamed when
they hold at least the task's ``in_memory_below`` pairs). Tar reading is the
``webdataset`` package's (``tariterators``): it is what img2dataset writes for, expands
brace patterns, opens local, ``pipe:`` and remote URLs, and its per-shard iterator is
the piece a deterministic order needs. ``datasets``' own webdataset builder was the
alternative; it takes no brace patterns and shuffles with its own buffer, whose order no
in-memory path reproduces. Parquet files are read with ``datasets`` in streaming mode.

What stays in memory is the **index** (``ShardIndex``): each record's key, caption and
shard and, in a local tar, the byte offset and size of its image (from ``tarfile``'s
member headers), read once when the data stage is built: about a hundred bytes per
record plus the caption. Images are read and decoded, resized and centre-cropped
(``data.fit``, as the in-memory path does) in ``torch.utils.data.DataLoader`` workers
(the task's ``num_workers``), so memory does not grow with the data set: a worker reads a
local tar's images at their offsets, a batch at a time; a ``pipe:``/remote tar or a
parquet file, which cannot seek, is read front to back once per epoch and stream, the
worker holding the encoded images of the shard's records until it emits them (one
shard's worth: keep such shards small, as img2dataset's default 10,000 records are).

**Order.** ``epoch_order`` draws an epoch's global batch order from the trainer's
generator as a function of the shard of each row, the world size W and the loader
workers K (the data's *streams*: W x max(1, K)). The shards are shuffled, dealt round-
robin to the streams (so no two processes or workers read one shard: every record is
read once per epoch across the job), each shard's records shuffled; rank r's local
batch j is chunk j // K of its stream j % K, the order in which a DataLoader's workers
take turns. Every rank computes the same order from the index. With one shard (the
embedded default) it is the trainer's ``randperm``, unchanged. In-memory pairs that
came from shards (below the task's ``in_memory_below``) keep their shard per row and
use the same order, so both paths give the same batches for the same seed
(tests/clip/test_shards.py). An epoch ends when its shortest stream does: records beyond
that are dropped for the epoch (as ``drop_last`` does with one stream); shards of equal
size, as img2dataset writes them, and at least W x K of them keep that small.

**Poisoning on the fly.** Rows are positions in the key index (the training rows sorted,
so in shard order), which makes an attack's choice of rows (drawn from its seed) a
choice of record keys, and per-record state of defenses (RoCLIP's and OTCCLIP's pools,
SafeCLIP's split, CleanCLIP's clean set) state by record key. An attack's edits
(``StreamedPairs.edited``) are kept as an overlay by row: the new caption and, for rows
whose image changes, the poisoned image (a few percent of records at most), plus the
pairs the attack adds, which form one extra shard. The stream applies them as it reads,
so a poisoned data set never exists as a copy; tests check it equals the materialised
one record by record.

**Corrupt records.** A record whose image does not decode, or that lacks an image or a
caption, stops the run with a ``DataError`` naming the shard and the key (the policy of
the in-memory path): a silently shorter epoch would change what the board reports
without saying so. Remove the record or re-run img2dataset on that shard.
"""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import datasets
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset import shardlists, tariterators

from benchbench.clip import data as clip_data
from benchbench.errors import DataError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
INDEX_FILE = "shard_index.json"
STREAMED_FILE = "streamed_pairs.json"
OVERLAY = "overlay"  # the attack's images (PNG bytes in a Dataset), next to STREAMED_FILE


def is_shards(spec: str) -> bool:
    """Does the ``data`` param name tar shards (a .tar, a brace pattern of them, or a folder of them)?"""
    path = Path(spec)
    if path.is_dir():
        return any(path.glob("*.tar"))
    return spec.endswith(".tar")


def parquet_files(spec: str) -> list[Path]:
    """The parquet shards of ``spec`` (a .parquet file or a folder of them, not a
    ``save_to_disk`` folder), sorted; [] if it names something else."""
    path = Path(spec)
    if path.is_file():
        return [path] if path.suffix == ".parquet" else []
    if not path.is_dir() or (path / "state.json").exists() or (path / "dataset_dict.json").exists():
        return []
    return sorted(path.rglob("*.parquet"))


def parquet_rows(files: Sequence[Path]) -> int:
    """How many pairs the parquet shards hold, from their footers (nothing is read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def expand(spec: str) -> list[str]:
    """The shard files of ``spec``, in order: a folder's ``*.tar`` (else ``*.parquet``)
    sorted, or a brace pattern expanded."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(str(f) for f in path.glob("*.tar")) or [str(f) for f in parquet_files(spec)]
    else:
        files = shardlists.expand_urls(spec)
    missing = [f for f in files if "://" not in f and not f.startswith("pipe:") and not Path(f).is_file()]
    if not files or missing:
        where = f"{missing[0]}: no such shard ({len(missing)} of {len(files)} missing)" if missing else \
            f"{spec}: no shards"
        raise DataError(f"{where}; give a .tar, a brace pattern such as /data/cc3m/{{00000..00331}}.tar, a "
                        "folder of .tar files, or parquet files")
    return files


def _members(url: str) -> Iterator[dict]:
    """The records of one tar shard as webdataset groups them: ``{"__key__", ext: bytes, ...}``."""
    return tariterators.group_by_keys(tariterators.tar_file_expander(tariterators.url_opener([{"url": url}])))


def _records(url: str, image_column: str, caption_column: str) -> Iterator[tuple[str, str, bytes, str]]:
    """One shard's pairs in file order as ``(key, caption, encoded image, where)``: a tar's
    through webdataset, a parquet file's through ``datasets`` streaming (key: the row)."""
    if not url.endswith(".parquet"):
        for record in _members(url):
            key, where = record["__key__"], f"{url} key {record['__key__']}"
            yield key, _caption(record, caption_column, where), _image_bytes(record, where), where
        return
    rows = datasets.load_dataset("parquet", data_files=url, split="train", streaming=True)
    for column, param in ((image_column, "image_column"), (caption_column, "caption_column")):
        if column not in (rows.column_names or []):
            raise DataError(f"{url}: no column '{column}' (columns: {', '.join(rows.column_names or [])}); set "
                            f"the task param '{param}'")
    for i, row in enumerate(rows.cast_column(image_column, datasets.Image(decode=False))):
        image, where = row[image_column], f"{url} key {i}"
        if not image or not (image.get("bytes") or image.get("path")):
            raise DataError(f"{where}: no image; remove the row or re-write the file")
        if row[caption_column] is None:
            raise DataError(f"{where}: no caption; remove the row or re-write the file")
        yield str(i), str(row[caption_column]), image["bytes"] or Path(image["path"]).read_bytes(), where


def _caption(record: dict, caption_key: str, where: str) -> str:
    if "txt" in record:
        return record["txt"].decode("utf-8").strip()
    if "json" in record:
        meta = json.loads(record["json"])
        if caption_key in meta:
            return str(meta[caption_key])
    raise DataError(f"{where}: no caption (a .txt member, or a .json member with '{caption_key}'); set the task "
                    "param caption_column to the json field that holds it")


def _image_bytes(record: dict, where: str) -> bytes:
    for ext in IMAGE_EXTENSIONS:
        if ext in record:
            return record[ext]
    raise DataError(f"{where}: no image member ({', '.join('.' + e for e in IMAGE_EXTENSIONS)}); remove the "
                    "record or re-write the shard")


def decode(data: bytes, size: int, where: str) -> Image.Image:
    """Encoded image -> RGB ``size`` x ``size``, fitted as the in-memory path fits it."""
    return clip_data.fit(clip_data.decode({"bytes": data, "path": None}, where), size)


def _image_spans(url: str) -> dict[str, tuple[int, int]]:
    """Where each record's image lies in a local tar: key -> (byte offset, size), from the
    members' headers (``tarfile`` seeks over the data), the image ``_image_bytes`` picks;
    {} for a compressed tar (no offsets into it: it is read front to back)."""
    spans: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        tar = tarfile.open(url, "r:")
    except tarfile.ReadError:
        return {}
    with tar:
        for member in tar:
            key, ext = tariterators.base_plus_ext(member.name)
            if member.isfile() and ext is not None and ext.lower() in IMAGE_EXTENSIONS:
                spans.setdefault(key, {})[ext.lower()] = (member.offset_data, member.size)
    return {key: next(found[e] for e in IMAGE_EXTENSIONS if e in found) for key, found in spans.items()}


@dataclass
class ShardIndex:
    """Every record's shard, key and caption, and where its image lies in a local shard
    (-1: a ``pipe:`` or remote shard, read front to back): what the stream keeps in memory."""

    shards: list[str]
    columns: tuple[str, str]  # (image, caption): a parquet file's columns; a .json member's caption field
    keys: list[str]
    captions: list[str]
    shard_of: list[int]
    offsets: list[int]
    sizes: list[int]

    @classmethod
    def build(cls, spec: str, image_column: str = clip_data.IMAGE,
              caption_column: str = clip_data.CAPTION) -> "ShardIndex":
        """Read the captions of every shard, checking each record has an image (not decoded)."""
        shards = expand(spec)
        index = cls(shards, (image_column, caption_column), [], [], [], [], [])
        for s, url in enumerate(shards):
            try:
                spans = _image_spans(url) if Path(url).is_file() and not url.endswith(".parquet") else {}
                for key, caption, _, _ in _records(url, image_column, caption_column):
                    offset, size = spans.get(key, (-1, -1))
                    index.keys.append(key)
                    index.captions.append(caption)
                    index.shard_of.append(s)
                    index.offsets.append(offset)
                    index.sizes.append(size)
            except DataError:
                raise
            except Exception as exc:  # tarfile, webdataset and pyarrow raise many types for a broken shard
                raise DataError(f"{url}: cannot read as a shard ({type(exc).__name__}: {exc}); re-write it") \
                    from None
        if not index.keys:
            raise DataError(f"{spec}: the shards hold no records")
        return index

    def __len__(self) -> int:
        return len(self.keys)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(vars(self)))  # not asdict: it would copy every list first

    @classmethod
    def load(cls, path: Path) -> "ShardIndex":
        d = json.loads(path.read_text())
        return cls(**{**d, "columns": tuple(d["columns"])})


def epoch_order(shard_of: torch.Tensor, keep: torch.Tensor, generator: torch.Generator, batch_size: int,
                world: int, workers: int) -> torch.Tensor:
    """The epoch's rows in global-batch order (module docstring); ``keep`` drops rows for
    the epoch (a re-matching defense's -1). ``batch_size`` is global; rank r's slice of
    global batch j is its local batch j."""
    n_shards = int(shard_of.max()) + 1 if len(shard_of) else 0
    if n_shards <= 1:
        rows = torch.randperm(len(shard_of), generator=generator)
        return rows[keep[rows]]
    streams_per_rank = max(1, workers)
    n_streams = world * streams_per_rank
    if n_shards < n_streams:
        raise DataError(f"{n_shards} shards cannot feed {world} process(es) x {streams_per_rank} loader worker(s) "
                        "without two reading one shard; write more shards or lower num_workers")
    members = [torch.nonzero(shard_of == s).flatten() for s in range(n_shards)]
    streams: list[list[torch.Tensor]] = [[] for _ in range(n_streams)]
    for i, s in enumerate(torch.randperm(n_shards, generator=generator).tolist()):
        rows = members[s][torch.randperm(len(members[s]), generator=generator)]
        streams[i % n_streams].append(rows[keep[rows]])
    local = batch_size // world
    flat = [torch.cat(parts) for parts in streams]
    chunks = min(len(f) for f in flat) // local
    batches = []
    for j in range(chunks * streams_per_rank):
        for r in range(world):
            stream = flat[r * streams_per_rank + j % streams_per_rank]
            c = j // streams_per_rank
            batches.append(stream[c * local:(c + 1) * local])
    return torch.cat(batches) if batches else torch.zeros(0, dtype=torch.long)


@dataclass
class Overlay:
    """An attack's edits of streamed pairs: new captions and images by row, added pairs."""

    captions: dict[int, str] = field(default_factory=dict)  # replaced rows' captions
    images: dict[int, bytes] = field(default_factory=dict)  # replaced rows' images (PNG)
    added_images: list[bytes] = field(default_factory=list)  # PNG, rows n_base.. in order
    added_captions: list[str] = field(default_factory=list)


class _Stream(IterableDataset):
    """Worker w reads its runs (``(shard, rows)``, a shard's rows in emit order), decodes
    them and yields ``(rows, images)`` chunks of ``batch`` (cut at the end of each run too
    if ``cut_runs``); a ``DataError`` travels as a message so the main process raises it
    as one line."""

    def __init__(self, pairs: "StreamedPairs", runs: list[list[tuple[int, list[int]]]], batch: int,
                 cut_runs: bool):
        self.pairs, self.runs, self.batch, self.cut_runs = pairs, runs, batch, cut_runs

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor] | str]:
        info = get_worker_info()
        runs = self.runs[info.id if info is not None else 0]
        rows: list[int] = []
        images: list[Image.Image] = []  # to_uint8 batches them as the in-memory path does (same strides)
        try:
            for shard, run in runs:
                for row, image in self.pairs.read(shard, run):
                    rows.append(row)
                    images.append(image)
                    if len(rows) == self.batch:
                        yield torch.tensor(rows), clip_data.to_uint8(images)
                        rows, images = [], []
                if rows and self.cut_runs:
                    yield torch.tensor(rows), clip_data.to_uint8(images)
                    rows, images = [], []
            if rows:
                yield torch.tensor(rows), clip_data.to_uint8(images)
        except DataError as exc:
            yield str(exc)


def chunk_rows(shard_of: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Rows ``0..N-1`` (in shard order, as the task stores them) cut where the shard changes
    and every ``batch_size`` rows: the chunks an embedding pass encodes together, the same
    in memory and streamed (one batch's rows change a batch's rounding)."""
    for _, run in _runs(range(len(shard_of)), shard_of):
        for i in range(0, len(run), batch_size):
            yield run[i:i + batch_size]


def _runs(rows: Sequence[int], shard_of: Sequence[int]) -> list[tuple[int, list[int]]]:
    """``rows`` cut where the shard changes."""
    runs: list[tuple[int, list[int]]] = []
    for row in rows:
        if runs and runs[-1][0] == shard_of[row]:
            runs[-1][1].append(row)
        else:
            runs.append((shard_of[row], [row]))
    return runs


class StreamedPairs:
    """Training pairs streamed from shards: the in-memory ``PairSet``'s interface for the
    trainer (``captions``, ``tokens``, ``shard_of``, ``feed``, ``chunks``) and enough of a
    ``datasets.Dataset``'s for attacks (``len``, ``[column]``, ``select``), whose edits
    (``clip.data.edit_pairs``) come back as a new ``StreamedPairs`` with an overlay."""

    def __init__(self, index: ShardIndex, rows: Sequence[int], size: int, workers: int = 0,
                 overlay: Overlay | None = None):
        self.index, self.base_rows, self.size, self.workers = index, list(rows), size, workers
        self.overlay = overlay or Overlay()
        self.n_base = len(self.base_rows)
        added = len(self.overlay.added_captions)
        self._shard = [index.shard_of[r] for r in self.base_rows]
        self.added_shard = max(self._shard, default=-1) + 1  # the attack's added pairs: one more shard, as
        self._shard += [self.added_shard] * added  # ``clip.data.edit_pairs`` numbers them in memory
        self.captions = [self.overlay.captions.get(i, index.captions[r]) for i, r in enumerate(self.base_rows)]
        self.captions += self.overlay.added_captions
        self.shard_of = torch.tensor(self._shard, dtype=torch.long)
        self.tokens: torch.Tensor | None = None  # set by ``tokenized``

    # -- what the trainer uses -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self.captions)

    def tokenized(self, tokenize: Callable[[list[str]], torch.Tensor]) -> "StreamedPairs":
        """Set ``tokens`` (every caption's token ids: what the stream keeps in memory per pair)."""
        self.tokens = tokenize(self.captions)
        return self

    def streaming(self, workers: int) -> "StreamedPairs":
        """These pairs read by ``workers`` DataLoader workers (0: in this process)."""
        return StreamedPairs(self.index, self.base_rows, self.size, workers, self.overlay)

    def encoded(self, shard: int, rows: list[int]) -> Iterator[tuple[int, bytes, str]]:
        """Rows of one shard (the data's rows) as ``(row, encoded image, where)``, in the
        order of ``rows``: read at the index's offsets from a local shard (a batch's bytes
        in memory), else in one pass over the tar holding the bytes of ``rows``."""
        if shard == self.added_shard:  # the attack's added pairs
            for row in rows:
                yield row, self.overlay.added_images[row - self.n_base], f"added pair {row}"
            return
        url, index = self.index.shards[shard], self.index
        where = lambda row: f"{url} key {index.keys[self.base_rows[row]]}"  # noqa: E731
        if rows and index.offsets[self.base_rows[rows[0]]] >= 0:
            with open(url, "rb") as tar:
                for row in rows:
                    if row in self.overlay.images:
                        yield row, self.overlay.images[row], where(row)
                        continue
                    tar.seek(index.offsets[self.base_rows[row]])
                    yield row, tar.read(index.sizes[self.base_rows[row]]), where(row)
            return
        want = {index.keys[self.base_rows[row]]: row for row in rows}
        found: dict[int, bytes] = {}
        for key, _, image, _ in _records(url, *index.columns):
            row = want.get(key)
            if row is not None:
                found[row] = self.overlay.images.get(row) or image
        for row in rows:
            if row not in found:
                raise DataError(f"{where(row)} is in the index but not in the shard (the shard changed after "
                                "the data stage was built); clear the cache")
            yield row, found.pop(row), where(row)

    def read(self, shard: int, rows: list[int]) -> Iterator[tuple[int, Image.Image]]:
        """Rows of one shard, decoded, in the order of ``rows``."""
        for row, data, where in self.encoded(shard, rows):
            yield row, decode(data, self.size, where)

    def _load(self, runs: list[list[tuple[int, list[int]]]], batch: int, cut_runs: bool = False
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        workers = len(runs) if self.workers > 0 else 0
        # its own generator: a DataLoader draws its workers' seed from the global RNG, which
        # augmentations draw from, and the stream must leave training's randomness alone
        loader = DataLoader(_Stream(self, runs, batch, cut_runs), batch_size=None, num_workers=workers,
                            prefetch_factor=2 if workers else None, generator=torch.Generator())
        for item in loader:
            if isinstance(item, str):
                raise DataError(item)
            yield item

    def feed(self, rows: torch.Tensor, batch_size: int, first_batch: int, world: int, rank: int
             ) -> Iterator[torch.Tensor]:
        """This rank's images of each global batch of ``rows`` from ``first_batch`` on: local
        batch j comes from loader worker (j - first_batch) % K, in the DataLoader's turns."""
        local = batch_size // world
        n_batches = len(rows) // batch_size
        mine = [rows[j * batch_size + rank * local:j * batch_size + (rank + 1) * local].tolist()
                for j in range(first_batch, n_batches)]
        k = max(1, self.workers)
        runs = [_runs([row for batch in mine[w::k] for row in batch], self._shard) for w in range(k)]
        for expected, (got, images) in zip(mine, self._load(runs, local)):
            if got.tolist() != expected:  # the order contract between the trainer and the stream
                raise RuntimeError("the shard stream delivered rows out of the epoch's order")
            yield images

    def chunks(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every row once, as ``(rows, images)`` chunks (for embeddings): each shard's rows
        cut into pieces of ``batch_size``, the shards in no set order. The pieces are those
        of ``chunk_rows``, whatever the workers, so embeddings are the in-memory path's."""
        k = max(1, self.workers)
        by_shard = _runs(range(len(self)), self._shard)
        yield from self._load([by_shard[w::k] for w in range(k)], batch_size, cut_runs=True)

    # -- what attacks use (a Dataset's interface) ----------------------------------------
    @property
    def column_names(self) -> list[str]:
        return [clip_data.IMAGE, clip_data.CAPTION, clip_data.POISON]

    def __getitem__(self, column: str) -> list:
        if column == clip_data.CAPTION:
            return list(self.captions)
        if column == clip_data.POISON:
            return [i in self.overlay.captions for i in range(self.n_base)] + [True] * len(self.overlay.added_captions)
        raise KeyError(f"streamed pairs have no column '{column}' in memory")

    def add_column(self, name: str, values: Sequence) -> "StreamedPairs":
        """The ``none`` attack's ``is_poison`` of all False: these pairs, unchanged."""
        if name != clip_data.POISON or any(values):
            raise ValueError(f"streamed pairs take no column '{name}'; an attack edits them with clip.data.edit_pairs")
        return self

    def select(self, rows: Sequence[int]) -> datasets.Dataset:
        """The pairs ``rows`` decoded, as a ``Dataset`` (an attack reads the images it changes)."""
        rows = [int(r) for r in rows]
        images: dict[int, Image.Image] = {}
        for shard, run in _runs(sorted(rows), self._shard):
            images.update(self.read(shard, run))
        return datasets.Dataset.from_dict({clip_data.IMAGE: [images[r] for r in rows],
                                           clip_data.CAPTION: [self.captions[r] for r in rows]},
                                          features=datasets.Features({clip_data.IMAGE: datasets.Image(),
                                                                      clip_data.CAPTION: datasets.Value("string")}))

    def edited(self, replace: dict[int, tuple[Image.Image, str]], add: list[tuple[Image.Image, str]]
               ) -> "StreamedPairs":
        """These pairs with an attack's edits (``clip.data.edit_pairs``) as an overlay."""
        if self.overlay.captions or self.overlay.added_captions:
            raise ValueError("streamed pairs are edited once (by the attack)")
        overlay = Overlay({int(r): c for r, (_, c) in replace.items()},
                          {int(r): clip_data.png_bytes(im) for r, (im, _) in replace.items()},
                          [clip_data.png_bytes(im) for im, _ in add], [c for _, c in add])
        return StreamedPairs(self.index, self.base_rows, self.size, self.workers, overlay)

    # -- the stage on disk ---------------------------------------------------------------
    def save_to_disk(self, folder: str | Path) -> None:
        """The index, the rows and the overlay (JSON, and PNG bytes in a ``Dataset``): a
        stage folder that reads on its own, a few hundred bytes per record."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.index.save(folder / INDEX_FILE)
        o = self.overlay
        (folder / STREAMED_FILE).write_text(json.dumps({"rows": self.base_rows, "size": self.size,
                                                        "captions": {str(k): v for k, v in o.captions.items()},
                                                        "added_captions": o.added_captions}))
        if o.images or o.added_images:
            datasets.Dataset.from_dict({"row": list(o.images) + [-1] * len(o.added_images),
                                        "png": list(o.images.values()) + o.added_images},
                                       features=datasets.Features({"row": datasets.Value("int64"),
                                                                   "png": datasets.Value("binary")})
                                       ).save_to_disk(str(folder / OVERLAY))

    @classmethod
    def load_from_disk(cls, folder: str | Path, workers: int = 0) -> "StreamedPairs":
        folder = Path(folder)
        index = ShardIndex.load(folder / INDEX_FILE)
        d = json.loads((folder / STREAMED_FILE).read_text())
        replaced, added = {}, []
        if (folder / OVERLAY).is_dir():
            images = datasets.load_from_disk(str(folder / OVERLAY))
            replaced = {int(r): bytes(p) for r, p in zip(images["row"], images["png"]) if r >= 0}
            added = [bytes(p) for r, p in zip(images["row"], images["png"]) if r < 0]
        overlay = Overlay({int(k): v for k, v in d["captions"].items()}, replaced, added, d["added_captions"])
        return cls(index, d["rows"], d["size"], workers, overlay)

    @staticmethod
    def on_disk(folder: str | Path) -> bool:
        return (Path(folder) / STREAMED_FILE).is_file()


def write_shards(pairs: Iterable[tuple[Image.Image, str]], folder: Path, per_shard: int, image_format: str = "jpg",
                 caption_format: str = "txt") -> list[Path]:
    """Write ``pairs`` as img2dataset does (``{key}.jpg|png`` + ``{key}.txt|json``, keys
    ``{shard:05d}{i:04d}``), one pair at a time (any number of them): for tests and benchmarks."""
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    sink = None
    try:
        for i, (image, caption) in enumerate(pairs):
            shard, k = divmod(i, per_shard)
            if k == 0:
                if sink is not None:
                    sink.close()
                paths.append(folder / f"{shard:05d}.tar")
                sink = wds.TarWriter(str(paths[-1]))
            buf = io.BytesIO()
            image.save(buf, format="JPEG" if image_format == "jpg" else "PNG", quality=95)
            text = caption if caption_format == "txt" else json.dumps({"caption": caption})
            sink.write({"__key__": f"{shard:05d}{k:04d}", image_format: buf.getvalue(), caption_format: text})
    finally:
        if sink is not None:
            sink.close()
    return paths


__all__ = ["Overlay", "ShardIndex", "StreamedPairs", "chunk_rows", "decode", "epoch_order", "expand", "is_shards", "write_shards"]
