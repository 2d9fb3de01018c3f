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
        caption, _ = world.caption(things, background)
        named = [s for s in SHAPES if re.search(rf"\b{s}\b", caption)]
        assert sorted(named) == sorted({t.shape for t in things}), caption


def _colour_of(shape: str, caption: str) -> str | None:
    """The colour word bound to ``shape`` in ``caption`` ("red small circle", "a circle in red")."""
    words = {w: c for c, names in synthetic.COLOUR_WORDS.items() for w in names}
    colour = "|".join(words)
    attribute = "|".join(w for table in (synthetic.SIZE_WORDS, synthetic.TEXTURE_WORDS)
                         for names in table.values() for w in names)
    match = (re.search(rf"\b{shape} in ({colour})\b", caption)
             or re.search(rf"\b({colour}) (?:(?:{attribute}) ){{0,2}}{shape}\b", caption))
    return words[match.group(1)] if match else None


def test_two_object_captions_bind_colours_to_their_shapes():
    """Attribute binding: each object's colour is named inside its own phrase."""
    world = World(SyntheticSpec(seed=11))
    for _ in range(200):
        things, background = world.scene(2)
        if things[0].shape == things[1].shape:
            continue
        caption, _ = world.caption(things, background)
        for t in things:
            assert _colour_of(t.shape, caption) == t.colour, caption


def test_every_caption_names_a_colour_and_records_its_template(world):
    """No caption form is colour-free (docs/worlds.md, C2), and the template column says
    which of ``TEMPLATES`` wrote each caption."""
    pairs, _ = world
    rows = [json.loads(line) for line in (pairs / "train" / "metadata.jsonl").read_text().splitlines()]
    for row in rows:
        caption = row["caption"]
        for shape in [s for s in SHAPES if re.search(rf"\b{s}\b", caption)]:
            assert _colour_of(shape, caption) is not None, caption
        skeleton = synthetic.TEMPLATES[row["template"]]
        assert all(part in caption for part in re.split(r"\{\w+\}", skeleton) if part.strip()), (caption, skeleton)


def test_zero_shot_prompts_are_captions_the_generator_writes():
    """C3: every prompt, filled with a class, is a caption some scene can get."""
    world = World(SyntheticSpec(seed=3))
    written = set()
    for _ in range(20000):
        things, background = world.scene(1)
        written.add(world.caption(things, background)[0])
    prompts = {t.format(s) for t in synthetic.ZERO_SHOT_TEMPLATES for s in SHAPES}
    assert len(synthetic.ZERO_SHOT_TEMPLATES) == 6 * len(synthetic.COLOUR_WORDS)
    assert len(prompts & written) > len(prompts) // 2


def test_images_have_the_requested_size():
    world = World(SyntheticSpec(image_size=48, seed=1))
    assert world.draw(*world.scene(2)).size == (48, 48)
