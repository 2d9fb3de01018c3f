"""The streamed data path (``benchbench.clip.shards``) on WebDataset shards the tests write:
the shard layouts img2dataset writes, one-line errors, the epoch order's split over
processes and loader workers, and the stream giving exactly what the in-memory path gives
(batches, poisoned records, trained weights, a whole cell's metrics) for the same seed."""
from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import datasets
import pytest
import torch

from benchbench.cells import CellSpec, ComponentRef
from benchbench.checkpoint import Checkpointer
from benchbench.clip import data as clip_data
from benchbench.clip.api import Poisoned
from benchbench.clip.model import ClipModel, ModelSpec
from benchbench.clip.shards import ShardIndex, StreamedPairs, epoch_order, expand, is_shards, write_shards
from benchbench.clip.synthetic import SyntheticSpec, write_world
from benchbench.clip.task import ClipPoisoningTask
from benchbench.clip.trainer import PairSet, TrainConfig
from benchbench.errors import DataError
from benchbench.runner import Environment, run_cell
from benchbench_clip_attacks import BadNets, TargetedPoison
from benchbench_clip_baseline import StandardClip
from benchbench_roclip import RoCLIP
from benchbench_safeclip import SafeCLIP
from tests.clip.conftest import assert_same_weights
from tests.conftest import DyingCheckpointer, Killed
from tests.processes import on_processes

SIZE = 32
PER_SHARD = 12
SPEC = SyntheticSpec(n_pairs=96, n_eval_train=16, n_eval_test=16, seed=5)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[list, Path]:
    """The synthetic world's pairs as (PIL image, caption), and its evaluation folder."""
    pairs_path, eval_path = write_world(tmp_path_factory.mktemp("world"), SPEC)
    ds = clip_data.load_pairs(pairs_path, SIZE, cache_dir=tmp_path_factory.mktemp("hf"))
    return list(zip(ds[clip_data.IMAGE], ds[clip_data.CAPTION])), eval_path


@pytest.fixture(scope="module")
def png_shards(source, tmp_path_factory) -> Path:
    """8 shards of 12 pairs, png + json (lossless: decoded images equal the source's)."""
    folder = tmp_path_factory.mktemp("png")
    write_shards(source[0], folder, PER_SHARD, image_format="png", caption_format="json")
    return folder


@pytest.fixture(scope="module")
def index(png_shards) -> ShardIndex:
    return ShardIndex.build(str(png_shards))


def _streamed(index: ShardIndex, workers: int = 0) -> StreamedPairs:
    return StreamedPairs(index, range(len(index.keys)), SIZE, workers)


def _in_memory(streamed: StreamedPairs) -> PairSet:
    """The same pairs decoded, with their shard per row: the task's path below in_memory_below."""
    ds = streamed.select(range(len(streamed)))
    return PairSet(clip_data.to_uint8(ds), list(ds[clip_data.CAPTION]), torch.zeros(len(ds), 1), streamed.shard_of)


def test_the_layouts_img2dataset_writes_index_alike(source, png_shards, index, tmp_path):
    pairs, _ = source
    write_shards(pairs, tmp_path / "jpg", PER_SHARD, image_format="jpg", caption_format="txt")
    brace = str(tmp_path / "jpg" / "{00000..00007}.tar")
    assert is_shards(brace) and is_shards(str(png_shards)) and not is_shards(str(tmp_path))
    assert expand(brace) == [str(tmp_path / "jpg" / f"{s:05d}.tar") for s in range(8)]
    jpg = ShardIndex.build(brace)
    assert jpg.captions == index.captions == [c for _, c in pairs]
    assert jpg.keys == index.keys and jpg.shard_of == index.shard_of == [i // PER_SHARD for i in range(96)]
    one = ShardIndex.build(str(tmp_path / "jpg" / "00003.tar"))
    assert one.captions == index.captions[36:48] and one.shard_of == [0] * PER_SHARD
    # png is lossless: the stream decodes the source's pixels; jpg decodes to the same size
    streamed = _streamed(index).select(range(96))
    assert torch.equal(clip_data.to_uint8(streamed), clip_data.to_uint8([im for im, _ in pairs]))
    assert clip_data.to_uint8(_streamed(jpg).select([5])).shape == (1, 3, SIZE, SIZE)


def test_parquet_files_stream_through_datasets_the_same_pairs(source, index, tmp_path):
    """Parquet shards (as ``datasets`` writes them) are read with ``datasets`` streaming;
    below in_memory_below pairs the task keeps its in-memory loader."""
    pairs, _ = source
    for part in range(2):
        rows = pairs[part * 48:(part + 1) * 48]
        datasets.Dataset.from_dict({"jpeg": [im for im, _ in rows], "text": [c for _, c in rows]}).to_parquet(
            str(tmp_path / "pq" / f"part-{part:05d}.parquet"))
    with pytest.raises(DataError, match="no column 'image'.*set the task param 'image_column'"):
        ShardIndex.build(str(tmp_path / "pq"))
    parquet = ShardIndex.build(str(tmp_path / "pq"), image_column="jpeg", caption_column="text")
    assert parquet.captions == index.captions and parquet.shard_of == [i // 48 for i in range(96)]
    assert parquet.keys[:2] == ["0", "1"] and set(parquet.offsets) == {-1}
    assert torch.equal(_in_row_order(_streamed(parquet, workers=1)), _in_memory(_streamed(index)).images)
    task = lambda n: ClipPoisoningTask({"data": str(tmp_path / "pq"), "in_memory_below": n})  # noqa: E731
    assert task(96)._streamed and not task(97)._streamed
    assert ClipPoisoningTask({"data": "/data/cc3m/{00000..00331}.tar"}).dataset_name() == "cc3m"  # the board's name


def test_a_pipe_url_streams_front_to_back_the_same_pairs(png_shards, index):
    """Local shards are read at the index's byte offsets; a ``pipe:`` (or remote) one,
    which cannot seek, in one pass: both give the same images."""
    piped = ShardIndex.build(f"pipe:cat {png_shards}/{{00000..00007}}.tar")
    assert set(piped.offsets) == {-1} and min(index.offsets) > 0 and piped.captions == index.captions
    rows = epoch_order(torch.tensor(index.shard_of), torch.ones(96, dtype=torch.bool), torch.Generator(), 8, 1, 0)
    for a, b in zip(_streamed(piped).feed(rows, 8, 0, 1, 0), _streamed(index).feed(rows, 8, 0, 1, 0), strict=True):
        assert torch.equal(a, b)


def test_bad_shards_fail_in_one_line_naming_shard_and_key(source, tmp_path):
    with pytest.raises(DataError, match=r"00008\.tar: no such shard \(2 of 2 missing\)"):
        expand(str(tmp_path / "{00008..00009}.tar"))
    folder = tmp_path / "bad"
    write_shards(source[0][:PER_SHARD * 2], folder, PER_SHARD)
    with tarfile.open(folder / "00001.tar", "a") as tar:  # a record whose image is not an image
        for name, data in (("000010099.jpg", b"not an image"), ("000010099.txt", b"a red square")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for workers in (0, 1):  # in this process, and from a loader worker
        pairs = _streamed(ShardIndex.build(str(folder)), workers)
        with pytest.raises(DataError, match=r"00001\.tar key 000010099: cannot decode image") as err:
            list(pairs.feed(torch.arange(len(pairs)), 5, 0, 1, 0))
        assert "\n" not in str(err.value)
    for member, error in (("k1.jpg", "k1: no caption"), ("k1.txt", "k1: no image member")):
        (tmp_path / member).mkdir()
        with tarfile.open(tmp_path / member / "00000.tar", "w") as tar:
            info = tarfile.TarInfo(member)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        with pytest.raises(DataError, match=error):
            ShardIndex.build(str(tmp_path / member))


def test_one_shard_orders_an_epoch_as_the_in_memory_trainer_always_did():
    keep = torch.rand(50, generator=torch.Generator().manual_seed(0)) > 0.2
    order = epoch_order(torch.zeros(50, dtype=torch.long), keep, torch.Generator().manual_seed(7), 10, 1, 0)
    rows = torch.randperm(50, generator=torch.Generator().manual_seed(7))
    assert torch.equal(order, rows[keep[rows]])


@pytest.mark.parametrize("world,workers", [(1, 0), (1, 2), (2, 2)])
def test_processes_and_workers_read_disjoint_shards_and_every_record_once(world, workers):
    shard_of = torch.arange(96) // PER_SHARD
    keep = torch.ones(96, dtype=torch.bool)
    batch = 8
    order = epoch_order(shard_of, keep, torch.Generator().manual_seed(1), batch, world, workers)
    assert len(order) == len(order.unique()) == 96  # equal shards, dealt evenly: nothing dropped
    local, k = batch // world, max(1, workers)
    readers: dict[int, set] = {}  # shard -> the (rank, worker) streams that read it
    for j in range(len(order) // batch):
        for r in range(world):
            for row in order[j * batch + r * local:j * batch + (r + 1) * local].tolist():
                readers.setdefault(int(shard_of[row]), set()).add((r, j % k))
    assert all(len(streams) == 1 for streams in readers.values())
    assert len({s for streams in readers.values() for s in streams}) == world * k
    with pytest.raises(DataError, match="8 shards cannot feed 2 process"):
        epoch_order(shard_of, keep, torch.Generator(), batch, 2, 8)


@pytest.mark.parametrize("world,workers", [(1, 0), (1, 2), (2, 2)])
def test_the_stream_feeds_the_batches_of_the_in_memory_path(index, world, workers):
    streamed = _streamed(index, workers)
    memory = _in_memory(streamed)
    keep = torch.ones(len(streamed), dtype=torch.bool)
    keep[::7] = False  # a re-matching defense dropping images for the epoch
    rows = epoch_order(streamed.shard_of, keep, torch.Generator().manual_seed(3), 8, world, workers)
    for rank in range(world):
        expected = list(memory.feed(rows, 8, 0, world, rank))
        got = list(streamed.feed(rows, 8, 0, world, rank))
        assert len(got) == len(expected) == len(rows) // 8
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
        # a run resumed at batch 4 gets the rest of the epoch
        assert all(torch.equal(a, b) for a, b in zip(streamed.feed(rows, 8, 4, world, rank), expected[4:]))
    chunked_rows, _ = map(torch.cat, zip(*streamed.chunks(10)))
    assert sorted(chunked_rows.tolist()) == list(range(96)) and torch.equal(_in_row_order(streamed), memory.images)


def _in_row_order(pairs: StreamedPairs) -> torch.Tensor:
    """Every image of ``pairs.chunks`` (which come in shard order), put in row order."""
    rows, images = map(torch.cat, zip(*pairs.chunks(10)))
    out = torch.empty_like(images)
    out[rows] = images
    return out


def _records(pairs) -> list[tuple]:
    """Every record as (caption, is_poison, image bytes) in row order, for either path."""
    images = _in_row_order(pairs) if isinstance(pairs, StreamedPairs) else clip_data.to_uint8(pairs)
    return [(c, bool(p), image.numpy().tobytes())
            for c, p, image in zip(pairs[clip_data.CAPTION], pairs[clip_data.POISON], images)]


@pytest.mark.parametrize("attack", [BadNets({"poison_rate": 0.1}), TargetedPoison({"n_targets": 2})],
                         ids=lambda a: a.name)
def test_a_streamed_poisoned_set_equals_the_materialised_one_record_by_record(index, source, attack, tmp_path):
    streamed = _streamed(index)
    test = datasets.load_from_disk(_eval_folder(source[1], tmp_path))["test"]
    materialised = streamed.select(range(len(streamed))).add_column(clip_data.SHARD, streamed.shard_of.tolist())
    on_disk, in_memory = attack.poison(streamed, test, seed=4), attack.poison(materialised, test, seed=4)
    on_disk.save(tmp_path / "streamed")  # the stage round trip: index, rows, overlay
    loaded = Poisoned.load(tmp_path / "streamed").train
    assert isinstance(loaded, StreamedPairs) and not (tmp_path / "streamed" / "train" / "data").exists()
    assert sum(r[1] for r in _records(loaded)) > 0
    assert _records(loaded) == _records(in_memory.train)
    assert loaded.shard_of.tolist() == list(in_memory.train[clip_data.SHARD])


def _eval_folder(eval_path: Path, tmp_path: Path) -> str:
    out = tmp_path / "eval"
    clip_data.load_labelled(eval_path, SIZE, cache_dir=tmp_path / "hf").save_to_disk(str(out))
    return str(out)


@pytest.mark.parametrize("defense", [StandardClip, RoCLIP, SafeCLIP], ids=lambda d: d.name)
def test_training_on_the_stream_gives_the_weights_of_the_in_memory_path(index, defense):
    """RoCLIP augments (from the global RNG: loader workers must not draw from it) and
    keeps a caption pool by row; SafeCLIP splits the set from ``embed_all`` (the stream's
    chunks must batch as memory does)."""
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=0, progress=False, workers=2)
    runs = []
    for streamed in (True, False):
        model = ClipModel.create(ModelSpec(), seed=0)
        pairs = _streamed(index, workers=2)
        data = pairs.tokenized(model.tokenize) if streamed else PairSet.from_dataset(
            pairs.select(range(len(pairs))).add_column(clip_data.SHARD, pairs.shard_of.tolist()), model)
        log = defense(preset="smoke").train(model, config, data)
        runs.append((model.net.state_dict(), [{k: v for k, v in r.items() if k not in ("seconds", "timed")}
                                              for r in log]))
    assert runs[0][1] == runs[1][1]
    assert_same_weights(runs[0][0], runs[1][0], atol=0)


def _cell(shards: Path, eval_path: Path, in_memory_below: int) -> dict:
    params = {"data": str(shards), "eval_data": str(eval_path), "n_train": 80, "n_clean": 16, "batch_size": 16,
              "num_workers": 2, "in_memory_below": in_memory_below}
    return CellSpec(track="clip", task=ComponentRef("clip-poisoning", params), attack=ComponentRef("badnets"),
                    defense=ComponentRef("roclip"), evaluators=tuple(ComponentRef(e) for e in
                                                                     ("zero-shot", "asr", "rematch")),
                    seed=0, preset="smoke").to_dict()


def test_a_cell_on_shards_scores_the_same_streamed_and_in_memory(registry, png_shards, source, tmp_path):
    env = Environment(cache_root=str(tmp_path), progress=False)
    streamed, in_memory = (run_cell(_cell(png_shards, source[1], n), env, registry) for n in (0, 10_000))
    assert streamed["status"] == in_memory["status"] == "ok", streamed.get("traceback") or in_memory.get("traceback")
    scores = [{e: {k: v["value"] for k, v in m.items() if k != "false_rematch_rate_plain"}
               for e, m in r["metrics"].items()} for r in (streamed, in_memory)]
    assert scores[0] == scores[1] and scores[0]["rematch"]  # the defense re-matched, on both paths alike
    assert "false_rematch_rate_plain" not in streamed["metrics"]["rematch"]  # left out on streamed pairs
    streamed_stages = list((tmp_path / "clip-data").glob("*/train/streamed_pairs.json"))
    assert len(streamed_stages) == 1  # one base stage streams; the other decoded its pairs
    rows = json.loads(streamed_stages[0].read_text())["rows"]
    assert len(rows) == 80 and rows == sorted(rows)  # the training rows, in shard order


def test_a_streamed_training_killed_mid_epoch_resumes_to_the_uninterrupted_weights(index, tmp_path):
    """The stream restarts at the checkpoint's batch (``feed``'s ``first_batch``) with the
    epoch's saved order: 6 steps an epoch, killed after step 8."""
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=0, progress=False, workers=2)

    def train(checkpoints=None):
        model = ClipModel.create(ModelSpec(), seed=0)
        log = RoCLIP(preset="smoke").train(model, dataclasses.replace(config, checkpoints=checkpoints),
                                           _streamed(index, workers=2).tokenized(model.tokenize))
        return model.net.state_dict(), [{k: v for k, v in r.items() if k not in ("seconds", "timed")} for r in log]

    reference = train()
    with pytest.raises(Killed):
        train(DyingCheckpointer(tmp_path, 1, 8))
    resumed = train(Checkpointer(tmp_path, 1))
    assert resumed[1] == reference[1] and reference[1][0]["steps"] == 6
    assert_same_weights(resumed[0], reference[0], atol=0)


def _train_on_ranks(index: ShardIndex, streamed: bool) -> dict:
    """Plain CLIP on this rank's share of the streamed pairs (or of the same pairs in memory)."""
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-3, seed=0, progress=False, workers=1)
    model = ClipModel.create(ModelSpec(), seed=0)
    pairs = _streamed(index, workers=1)
    data = pairs.tokenized(model.tokenize) if streamed else _in_memory(pairs)
    if not streamed:
        data.tokens = model.tokenize(data.captions)
    StandardClip().train(model, config, data)
    return model.net.state_dict()


def test_two_processes_train_on_the_stream_as_on_the_same_pairs_in_memory(index, tmp_path):
    """Each rank streams only its shards (one loader worker each) and gets the batches the
    in-memory path slices for it: the two 2-process trainings end with the same weights."""
    (tmp_path / "s").mkdir(), (tmp_path / "m").mkdir()
    streamed = on_processes(tmp_path / "s", _train_on_ranks, index, True)
    in_memory = on_processes(tmp_path / "m", _train_on_ranks, index, False)
    assert_same_weights(streamed[0], streamed[1], atol=0)  # the ranks stay in step
    assert_same_weights(streamed[0], in_memory[0], atol=0)
