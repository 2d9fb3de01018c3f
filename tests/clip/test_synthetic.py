"""The synthetic world: deterministic, captioned truthfully, in the user-data layout."""
from __future__ import annotations

import dataclasses
import json
import re

from benchbench.clip import synthetic
from benchbench.clip.synthetic import SHAPES, SyntheticSpec, World, write_world


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_world(world, tiny_spec, tmp_path):
    pairs, _ = world
    again, _ = write_world(tmp_path / "again", tiny_spec)
    assert _files(pairs) == _files(again)
    other, _ = write_world(tmp_path / "other", dataclasses.replace(tiny_spec, seed=tiny_spec.seed + 1))
    assert _files(pairs) != _files(other)


def test_layout_is_an_imagefolder_with_captions_and_class_folders(world, tiny_spec):
    pairs, evaluation = world
    rows = [json.loads(line) for line in (pairs / "train" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == tiny_spec.n_pairs and all((pairs / "train" / r["file_name"]).exists() for r in rows)
    assert {p.name for p in (evaluation / "test").iterdir()} == set(SHAPES)
    assert sum(1 for _ in (evaluation / "test").rglob("*.png")) == tiny_spec.n_eval_test


def test_captions_name_the_shapes_they_show():
    world = World(SyntheticSpec(seed=7))
    for n_objects in (1, 2, 1, 2, 2, 1):
        things, background = world.scene(n_objects)
        caption = world.caption(things, background)
        named = [s for s in SHAPES if re.search(rf"\b{s}\b", caption)]
        assert sorted(named) == sorted({t.shape for t in things}), caption


def test_two_object_captions_bind_colours_to_their_shapes():
    """Attribute binding: a colour, when named, sits right before its own shape."""
    world = World(SyntheticSpec(seed=11))
    checked = 0
    for _ in range(200):
        things, background = world.scene(2)
        if things[0].shape == things[1].shape:
            continue
        caption = world.caption(things, background)
        for t in things:
            match = re.search(rf"(\w+) (?:striped |dotted )?{t.shape}\b", caption)
            if match and match.group(1) in synthetic.COLOURS:
                assert match.group(1) == t.colour, caption
                checked += 1
    assert checked > 50


def test_images_have_the_requested_size():
    world = World(SyntheticSpec(image_size=48, seed=1))
    assert world.draw(*world.scene(2)).size == (48, 48)
