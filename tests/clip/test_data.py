"""Loading user data: the accepted layouts, and errors that name the problem."""
from __future__ import annotations

import json
import shutil

import datasets
import pytest
import torch
from PIL import Image

from benchbench.clip import data, synthetic
from benchbench.errors import DataError


def _imagefolder(root, n=4, size=(40, 30), metadata="jsonl"):
    folder = root / "train"
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.new("RGB", size, (60 * i, 10, 200)).save(folder / f"img{i}.png")
        rows.append({"file_name": f"img{i}.png", "text": f"a photo number {i}"})
    if metadata == "jsonl":
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        (folder / "metadata.csv").write_text("file_name,text\n" + "".join(f"{r['file_name']},{r['text']}\n"
                                                                         for r in rows))
    return root


@pytest.mark.parametrize("metadata", ["jsonl", "csv"])
def test_imagefolder_with_metadata_loads_resized_pairs(tmp_path, metadata):
    root = _imagefolder(tmp_path / "pairs", metadata=metadata)
    pairs = data.load_pairs(root, 16, caption_column="text", cache_dir=tmp_path / "cache")
    assert pairs.column_names == ["image", "caption"]
    assert sorted(pairs["caption"]) == [f"a photo number {i}" for i in range(4)]
    images = data.to_uint8(pairs)
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8


def test_corrupt_image_raises_data_error_naming_the_file(tmp_path):
    root = _imagefolder(tmp_path / "pairs")
    (root / "train" / "img2.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"img2\.png: cannot decode image"):
        data.load_pairs(root, 16, caption_column="text", cache_dir=tmp_path / "cache")


def test_missing_caption_column_names_the_param(tmp_path):
    root = _imagefolder(tmp_path / "pairs")
    with pytest.raises(DataError, match="no column 'caption'.*caption_column"):
        data.load_pairs(root, 16, cache_dir=tmp_path / "cache")


def test_missing_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        data.load_pairs(tmp_path / "nowhere", 16)


def test_parquet_and_save_to_disk_layouts(tmp_path):
    pairs = data.load_pairs(_imagefolder(tmp_path / "pairs"), 16, caption_column="text",
                            cache_dir=tmp_path / "cache")
    pairs.to_parquet(str(tmp_path / "pairs.parquet"))
    pairs.save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "pairs.parquet", tmp_path / "saved"):
        loaded = data.load_pairs(source, 8, cache_dir=tmp_path / "cache")
        assert loaded["caption"][:] == pairs["caption"][:]
        assert data.to_uint8(loaded).shape == (4, 3, 8, 8)


def test_corrupt_image_in_parquet_names_file_and_row(tmp_path):
    good = data.load_pairs(_imagefolder(tmp_path / "pairs"), 16, caption_column="text",
                           cache_dir=tmp_path / "cache")
    raw = good.cast_column("image", datasets.Image(decode=False)).to_dict()
    raw["image"][1] = {"bytes": b"garbage", "path": None}
    bad = datasets.Dataset.from_dict(raw, features=datasets.Features(
        {"image": datasets.Image(decode=False), "caption": datasets.Value("string")}))
    bad.to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(DataError, match=r"bad\.parquet row 1: cannot decode image"):
        data.load_pairs(tmp_path / "bad.parquet", 16, cache_dir=tmp_path / "cache")


def test_labelled_eval_set_from_class_folders(world, tmp_path):
    _pairs, evaluation = world
    dd = data.load_labelled(evaluation, 32, cache_dir=tmp_path / "cache")
    assert set(dd) == {"train", "test"}
    test = data.Labelled.from_dataset(dd["test"])
    assert test.classes == tuple(sorted(test.classes)) and len(test.classes) == 8
    assert test.images.shape == (16, 3, 32, 32) and test.labels.max() < 8
    assert data.load_templates(evaluation) == synthetic.ZERO_SHOT_TEMPLATES


def test_eval_set_without_test_split_is_rejected(world, tmp_path):
    _pairs, evaluation = world
    only_train = tmp_path / "eval"
    shutil.copytree(evaluation / "train", only_train / "train")
    with pytest.raises(DataError, match="no 'test' split"):
        data.load_labelled(only_train, 32, cache_dir=tmp_path / "cache")


def test_templates_file_must_hold_placeholders(tmp_path):
    (tmp_path / "templates.json").write_text(json.dumps(["a photo"]))
    with pytest.raises(DataError, match="templates.json"):
        data.load_templates(tmp_path)
    assert data.load_templates(tmp_path / "elsewhere") == data.DEFAULT_TEMPLATES


def test_edit_pairs_replaces_appends_and_flags(world, tmp_path):
    pairs = data.load_pairs(world[0], 32, cache_dir=tmp_path / "cache")
    red = Image.new("RGB", (32, 32), (255, 0, 0))
    edited = data.edit_pairs(pairs, {2: (red, "replaced")}, [(red, "added")])
    assert len(edited) == len(pairs) + 1
    assert edited["is_poison"][:] == [i in (2, len(pairs)) for i in range(len(pairs) + 1)]
    assert edited[2]["caption"] == "replaced" and edited[-1]["caption"] == "added"
    assert torch.equal(data.to_uint8(edited.select([0])), data.to_uint8(pairs.select([0])))
    assert data.to_uint8(edited.select([2]))[0, 0].unique().tolist() == [255]
    assert list(edited["template"]) == [-1 if i in (2, len(pairs)) else t
                                     for i, t in enumerate(list(pairs["template"]) + [None])]


def test_template_column_is_kept_when_the_data_has_it(world, tmp_path):
    """The synthetic world's caption-template index survives loading (SafeCLIP's safe-set
    breakdown reads it); user data without the column loads without it."""
    pairs = data.load_pairs(world[0], 32, cache_dir=tmp_path / "cache")
    rows = [json.loads(line) for line in (world[0] / "train" / "metadata.jsonl").read_text().splitlines()]
    assert list(pairs["template"]) == [r["template"] for r in rows]
    assert all(0 <= t < len(synthetic.TEMPLATES) for t in pairs["template"])


def _flat(world, root):
    """The world's evaluation images in one flat ``<class>/`` folder named ``eval`` (a split
    keyword to ``datasets``), files named ``test-...``/``train-...`` (keywords too)."""
    _pairs, evaluation = world
    for f in sorted(evaluation.rglob("*.png")):
        split, shape = f.parent.parent.name, f.parent.name
        (root / shape).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / shape / f"{split}-{f.name}")
    return root


def test_flat_class_folders_are_split_per_class_with_the_seed(world, tmp_path):
    flat = _flat(world, tmp_path / "eval")
    assert data.is_flat_imagefolder(flat) and not data.is_flat_imagefolder(world[1])

    def load(seed):
        dd = data.load_labelled(flat, 32, cache_dir=tmp_path / "cache", split_seed=seed)
        assert set(dd) == {"train", "test"}
        return [data.Labelled.from_dataset(dd[s]) for s in ("train", "test")]

    train, test = load(0)
    assert train.classes == test.classes and len(test.classes) == 8
    assert len(train.labels) == len(test.labels) == 16  # eval_test_fraction 0.5 of 4 images per class
    assert torch.bincount(test.labels, minlength=8).tolist() == [2] * 8  # stratified: every class in both
    again, other = load(0)[1], load(1)[1]
    assert torch.equal(again.images, test.images)
    assert not torch.equal(other.images, test.images)
    quarter = data.load_labelled(flat, 32, cache_dir=tmp_path / "cache", test_fraction=0.25)
    assert len(quarter["test"]) == 8


def test_flat_folder_with_a_one_image_class_says_so(world, tmp_path):
    flat = _flat(world, tmp_path / "eval")
    (flat / "lonely").mkdir()
    shutil.copy(next((flat / "circle").iterdir()), flat / "lonely" / "one.png")
    with pytest.raises(DataError, match="cannot split the flat folder per class.*at least two images"):
        data.load_labelled(flat, 32, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("breakage, message", [
    (lambda r: shutil.rmtree(r / "test"), "no 'test' split"),
    (lambda r: [shutil.rmtree(d) for d in (r / "test").iterdir()], "test: 0 class folder"),
    (lambda r: shutil.copy(next((r / "test" / "circle").iterdir()), r / "test" / "loose.png"),
     "loose.png: an image outside a class folder"),
    (lambda r: [shutil.rmtree(d) for d in list((r / "test").iterdir())[1:]], "need at least two"),
])
def test_eval_layout_problems_are_named_before_loading(world, tmp_path, breakage, message):
    root = tmp_path / "my_eval"
    shutil.copytree(world[1], root)
    breakage(root)
    with pytest.raises(DataError, match=message):
        data.check_labelled(root)
    with pytest.raises(DataError, match=message):
        data.load_labelled(root, 32, cache_dir=tmp_path / "cache")


def test_pairs_layout_problems_are_named_before_loading(tmp_path):
    root = _imagefolder(tmp_path / "pairs")
    data.check_pairs(root, caption_column="text")
    with pytest.raises(DataError, match="metadata.jsonl:.*no column 'caption'.*caption_column"):
        data.check_pairs(root)
    (root / "train" / "metadata.jsonl").unlink()
    with pytest.raises(DataError, match="needs a metadata.jsonl or metadata.csv"):
        data.check_pairs(root)
    with pytest.raises(DataError, match="no such file or folder"):
        data.check_pairs(tmp_path / "nowhere")
    pairs = data.load_pairs(_imagefolder(tmp_path / "more"), 16, caption_column="text", cache_dir=tmp_path / "c")
    pairs.to_parquet(str(tmp_path / "pairs.parquet"))
    data.check_pairs(tmp_path / "pairs.parquet")
    with pytest.raises(DataError, match="no column 'text'.*caption_column"):
        data.check_pairs(tmp_path / "pairs.parquet", caption_column="text")
