"""A deterministic synthetic world of captioned images, written as user data would be.

The CLIP track needs image-caption pairs that train in seconds on a CPU and that no
download provides, so this module draws them. Every image shows one or two objects;
each object has a shape, a colour, a size, a texture and a position, on a background
with its own pattern. Captions always name each object's shape and colour and mention its
size and texture only sometimes, as alt text does, with many phrasings of each concept
(24 templates, three word orders, synonyms for every attribute): the properties
``docs/worlds.md`` asks of the CLIP world (C2-C4). Two-object images are captioned with
the binding of attributes to objects ("a red circle to the left of a blue square"), so a
model that only pools global features confuses compositions that token-level matching
(patch tokens vs word tokens) can separate.

The labelled evaluation set shows one object per image; its class is the shape, a word
every training caption of that shape contains. The zero-shot prompts are captions the
generator writes ("a photo of a red {}", for every colour), so classification prompts
come from the training-caption distribution. Everything is written to disk in the formats the loaders
in ``benchbench.clip.data`` read for user data (an ``imagefolder`` with
``metadata.jsonl`` for the pairs; an ``imagefolder`` with ``train/`` and ``test/`` class
subfolders plus ``templates.json`` for the evaluation set), so the synthetic path runs
the real one.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "bar", "cross", "ring", "star", "crescent")
COLOURS = {
    "red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 80, 225), "yellow": (240, 215, 35),
    "purple": (140, 55, 185), "orange": (245, 135, 25), "cyan": (40, 200, 215), "white": (240, 240, 240),
}
BACKGROUNDS = ("gray", "dark", "striped", "checkered")
BACKGROUND_P = (0.4, 0.3, 0.15, 0.15)
TEXTURES = ("solid", "striped", "dotted")
SIZES = {"small": (0.45, 0.55), "large": (0.62, 0.75)}  # object extent as a fraction of the image
PAIR_SCALE = 0.6  # two objects share the image
TEXTURE_P = (0.8, 0.1, 0.1)
CANVAS = 128  # draw on at least this many pixels and downsample: smooth edges at 32 px
#: The caption generator's version: part of the data stage key through the task version.
CAPTION_VERSION = "2"

#: Words a caption may use for each concept, the first being the canonical one. Shapes are
#: the evaluation classes, so their names are never varied (class names must stay the
#: words zero-shot prompts and the re-matching diagnostics look for).
COLOUR_WORDS = {
    "red": ("red", "scarlet"), "green": ("green", "emerald"), "blue": ("blue", "azure"),
    "yellow": ("yellow", "golden"), "purple": ("purple", "violet"), "orange": ("orange", "amber"),
    "cyan": ("cyan", "turquoise"), "white": ("white", "snowy"),
}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
TEXTURE_WORDS = {"striped": ("striped", "stripy"), "dotted": ("dotted", "spotted")}
WHERE_WORDS = {
    "center": ("in the center", "in the middle"), "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"), "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
}
BACKGROUND_WORDS = {"gray": ("plain gray", "gray", "grey"), "dark": ("dark", "black"),
                    "striped": ("striped",), "checkered": ("checkered", "checked")}
SYNONYM_P = 0.3  # how often a concept is named by a word other than its canonical one

#: Object phrase word orders: attributes before the shape in two orders, or the colour
#: after it ("a small circle in red").
PHRASE_ORDERS = ("{size}{texture}{colour} {shape}", "{colour} {size}{texture}{shape}",
                 "{size}{texture}{shape} in {colour}")

#: Caption templates; a caption's index into ``TEMPLATES`` is kept in the ``template``
#: column, so a defense's behaviour can be broken down by caption form.
SINGLE_TEMPLATES = (
    "{a_obj}", "a photo of {a_obj}", "an image of {a_obj}", "a picture of {a_obj}", "there is {a_obj}",
    "a close-up photo of {a_obj}", "{a_obj} {where}", "there is {a_obj} {where}", "a photo of {a_obj} {where}",
    "{a_obj}, {where}", "a drawing of {a_obj} {where}", "{a_obj} on a {bg} background",
    "a picture showing {a_obj} on a {bg} background", "{a_obj} against a {bg} backdrop",
    "an illustration of {a_obj} on a {bg} background", "a snapshot of {a_obj} {where} on a {bg} background",
)
PAIR_TEMPLATES = (
    "{a_obj1} and {a_obj2}", "{a_obj1} {rel} {a_obj2}", "a photo of {a_obj1} {rel} {a_obj2}",
    "two shapes: {a_obj1} and {a_obj2}", "{a_obj1} {rel} {a_obj2} on a {bg} background",
    "an image of {a_obj1} next to {a_obj2}", "a picture of {a_obj1} beside {a_obj2}",
    "a drawing of {a_obj1} and {a_obj2} on a {bg} background",
)
TEMPLATES = SINGLE_TEMPLATES + PAIR_TEMPLATES
#: Zero-shot prompts are captions the generator itself writes: the six single-object
#: templates that name no place or background, with every colour in canonical words, so
#: classification prompts come from the training-caption distribution (as CLIP's prompt
#: ensembles resemble alt text). ``{}`` is the class (shape).
ZERO_SHOT_TEMPLATES = tuple(
    template.format(a_obj=_phrase) for template in SINGLE_TEMPLATES[:6]
    for _phrase in (("an " if colour[0] in "aeiou" else "a ") + colour + " {}" for colour in COLOUR_WORDS)
)


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the generated files (hashed into the data stage key)."""

    n_pairs: int = 5000
    n_eval_train: int = 800  # labelled images for the linear probe (train + validation)
    n_eval_test: int = 400
    image_size: int = 32
    two_object_fraction: float = 0.3
    jitter: float = 0.05  # how far a single object's centre may stray from the image centre
    seed: int = 0


@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    size: str
    texture: str
    centre: tuple[float, float]  # (x, y) in [0, 1]
    extent: float  # fraction of the image side


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _where(x: float, y: float) -> str:
    """The key of ``WHERE_WORDS`` for an object centred at ``(x, y)``."""
    dx, dy = x - 0.5, y - 0.5
    if max(abs(dx), abs(dy)) < 0.12:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


class World:
    """Draws scenes and writes captions; one ``numpy`` generator makes it deterministic."""

    def __init__(self, spec: SyntheticSpec):
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        self.supersample = max(1, CANVAS // spec.image_size)

    def pairs(self, n: int) -> Iterator[tuple[Image.Image, str, int]]:
        """``n`` captioned scenes ``(image, caption, template)``, one at a time (the world's
        pairs; ``benchmarks/scale_clip.py`` streams them into tar shards)."""
        for _ in range(n):
            n_objects = 2 if self.rng.random() < self.spec.two_object_fraction else 1
            things, background = self.scene(n_objects)
            image = self.draw(things, background)
            yield (image, *self.caption(things, background))

    # -- scenes ------------------------------------------------------------------------
    def thing(self, shape: str | None, centre_box: tuple[float, float, float, float], scale: float = 1.0) -> Thing:
        """A random object whose centre is uniform in ``centre_box`` (x0, y0, x1, y1)."""
        r = self.rng
        size = str(r.choice(list(SIZES)))
        x0, y0, x1, y1 = centre_box
        return Thing(shape=shape or str(r.choice(SHAPES)), colour=str(r.choice(list(COLOURS))), size=size,
                     texture=str(r.choice(TEXTURES, p=TEXTURE_P)), centre=(float(r.uniform(x0, x1)),
                                                                           float(r.uniform(y0, y1))),
                     extent=float(r.uniform(*SIZES[size])) * scale)

    def scene(self, n_objects: int, shape: str | None = None) -> tuple[list[Thing], str]:
        background = str(self.rng.choice(BACKGROUNDS, p=BACKGROUND_P))
        if n_objects == 1:
            j = self.spec.jitter
            return [self.thing(shape, (0.5 - j, 0.5 - j, 0.5 + j, 0.5 + j))], background
        horizontal = self.rng.random() < 0.5  # side by side, or one above the other
        boxes = [(0.2, 0.3, 0.26, 0.7), (0.74, 0.3, 0.8, 0.7)]  # centres; objects never overlap
        if not horizontal:
            boxes = [(y0, x0, y1, x1) for x0, y0, x1, y1 in boxes]
        first = self.thing(None, boxes[0], PAIR_SCALE)
        second = self.thing(None, boxes[1], PAIR_SCALE)
        while (second.shape, second.colour) == (first.shape, first.colour):
            second = self.thing(None, boxes[1], PAIR_SCALE)
        return [first, second], background

    def draw(self, things: list[Thing], background: str) -> Image.Image:
        size = self.spec.image_size * self.supersample
        canvas = self._background(background, size)
        for t in things:
            mask = Image.new("L", (size, size), 0)
            _draw_shape(ImageDraw.Draw(mask), t, size)
            canvas.paste(self._fill(t, size), (0, 0), mask)
        return canvas.resize((self.spec.image_size,) * 2, Image.LANCZOS)

    def _background(self, kind: str, size: int) -> Image.Image:
        r = self.rng
        base = np.array([r.integers(70, 150)] * 3, dtype=np.float32) + r.normal(0, 10, 3)
        if kind == "dark":
            base = base * 0.35
        img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
        period = int(r.integers(3, 6)) * self.supersample * 2
        if kind in ("striped", "checkered"):
            img = img * _pattern({"striped": "dstripes", "checkered": "checks"}[kind], size, period)
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))

    def _fill(self, t: Thing, size: int) -> Image.Image:
        colour = np.array(COLOURS[t.colour], dtype=np.float32) + self.rng.normal(0, 12, 3)
        pattern = {"solid": "solid", "striped": "hstripes", "dotted": "dots"}[t.texture]
        img = colour * _pattern(pattern, size, 2 * self.supersample)
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))

    # -- captions ----------------------------------------------------------------------
    def word(self, synonyms: tuple[str, ...]) -> str:
        """The canonical word, or (with ``SYNONYM_P``) one of its synonyms."""
        if len(synonyms) == 1 or self.rng.random() >= SYNONYM_P:
            return synonyms[0]
        return synonyms[int(self.rng.integers(1, len(synonyms)))]

    def phrase(self, t: Thing) -> str:
        """Name the shape and its colour always (so no caption form is colour-free and no
        similarity mode splits captions by "colour named or not"), size and texture with
        the frequencies of casual alt text, in one of ``PHRASE_ORDERS``."""
        r = self.rng
        size = self.word(SIZE_WORDS[t.size]) + " " if r.random() < 0.3 else ""
        texture = self.word(TEXTURE_WORDS[t.texture]) + " " if t.texture != "solid" and r.random() < 0.4 else ""
        order = PHRASE_ORDERS[int(r.integers(len(PHRASE_ORDERS)))]
        return _article(order.format(size=size, texture=texture, colour=self.word(COLOUR_WORDS[t.colour]),
                                     shape=t.shape))

    def caption(self, things: list[Thing], background: str,
                templates: Sequence[int] | None = None) -> tuple[str, int]:
        """A caption of the scene and the index of its template in ``TEMPLATES``;
        ``templates``: the single-object templates to draw from (default: all)."""
        bg = self.word(BACKGROUND_WORDS[background])
        if len(things) == 1:
            if templates is None:
                index = int(self.rng.integers(len(SINGLE_TEMPLATES)))
            else:
                index = int(templates[int(self.rng.integers(len(templates)))])
            text = SINGLE_TEMPLATES[index].format(a_obj=self.phrase(things[0]), bg=bg,
                                                  where=self.word(WHERE_WORDS[_where(*things[0].centre)]))
            return text, index
        first, second = things
        horizontal = abs(first.centre[0] - second.centre[0]) > abs(first.centre[1] - second.centre[1])
        rel = "to the left of" if horizontal else "above"
        if self.rng.random() < 0.5:  # name them in either order; the relation follows
            first, second = second, first
            rel = "to the right of" if horizontal else "below"
        index = int(self.rng.integers(len(PAIR_TEMPLATES)))
        text = PAIR_TEMPLATES[index].format(a_obj1=self.phrase(first), a_obj2=self.phrase(second), rel=rel, bg=bg)
        return text, len(SINGLE_TEMPLATES) + index


# -- the world's vocabulary for attacks that write captions (benchbench_clip_attacks.adaptive)
#: Single-object templates (indices into ``TEMPLATES``) that name the object's place or
#: its background: the captions that say most about an image besides its object.
ATTRIBUTE_TEMPLATES = tuple(i for i, t in enumerate(SINGLE_TEMPLATES) if "{where}" in t or "{bg}" in t)
#: An object centre for each place word, as ``_where`` reads it.
WHERE_CENTRES = {"center": (0.5, 0.5), "left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25),
                 "bottom": (0.5, 0.75)}
PARAPHRASE_TRIES = 50  # caption draws per paraphrase asked for before giving up on more


@dataclass(frozen=True)
class SceneWords:
    """What a caption of a one-object scene says besides the shape: keys of
    ``COLOUR_WORDS``, ``SIZE_WORDS``, ``WHERE_WORDS`` and ``BACKGROUND_WORDS``."""

    colour: str
    size: str
    where: str
    background: str


def paraphrases(shape: str, n: int, seed: int, scene: SceneWords | None = None,
                templates: Sequence[int] | None = None) -> list[str]:
    """Up to ``n`` distinct captions the world's generator writes for one ``shape`` in one
    scene: ``scene``'s attributes (solid texture), or (None) a scene the world draws with
    ``seed``; ``templates``: the single-object templates to use (default: all). Fewer
    than ``n`` when the vocabulary has no more wordings of that scene."""
    world = World(SyntheticSpec(seed=seed))
    if scene is None:
        (thing,), background = world.scene(1, shape)
    else:
        thing = Thing(shape, scene.colour, scene.size, "solid", WHERE_CENTRES[scene.where],
                      float(np.mean(SIZES[scene.size])))
        background = scene.background
    found: dict[str, None] = {}
    for _ in range(PARAPHRASE_TRIES * n):
        found.setdefault(world.caption([thing], background, templates)[0])
        if len(found) == n:
            break
    return list(found)


def read_scene(image: np.ndarray) -> SceneWords:
    """The attributes of a one-object image of this world, read from its (S, S, 3) uint8
    pixels as an attacker captioning it would: the object is the saturated (or near-white)
    pixels, its colour the palette entry nearest their brighter half, its place and size
    from their centroid and extent; the background from the image border (plain, dark, or
    patterned: diagonal stripes are constant along anti-diagonals, checks are not)."""
    x = image.astype(np.float32)
    side = x.shape[0]
    lum, sat = x.mean(axis=2), x.max(axis=2) - x.min(axis=2)
    obj = (sat > 60) | (lum > 200)
    if not obj.any():
        obj[side // 2, side // 2] = True
    pixels = x[obj]
    bright = pixels[pixels.max(axis=1) >= np.median(pixels.max(axis=1))]
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    colour = list(COLOURS)[int(np.argmin(((palette - bright.mean(axis=0)) ** 2).sum(axis=1)))]
    ys, xs = np.nonzero(obj)
    extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
    size = "large" if extent / side > (SIZES["small"][1] + SIZES["large"][0]) / 2 else "small"
    where = _where((xs.mean() + 0.5) / side, (ys.mean() + 0.5) / side)
    ring = np.ones((side, side), bool)
    width = max(1, side // 16)
    ring[width:-width, width:-width] = False
    border = lum[ring & ~obj]
    if border.std() > 0.12 * border.mean():
        along = np.abs(lum[1:, :-1] - lum[:-1, 1:])[~obj[1:, :-1] & ~obj[:-1, 1:]].mean()  # anti-diagonal
        across = np.abs(lum[:, 1:] - lum[:, :-1])[~obj[:, 1:] & ~obj[:, :-1]].mean()
        background = "striped" if along < 0.5 * across else "checkered"
    else:
        background = "dark" if border.mean() < 61 else "gray"
    return SceneWords(colour, size, where, background)


@functools.lru_cache(maxsize=32)
def _pattern(kind: str, size: int, period: int) -> np.ndarray:
    """Brightness multiplier (size, size, 1) of a texture or background pattern."""
    yy, xx = np.mgrid[0:size, 0:size]
    dark = {
        "solid": np.zeros((size, size), bool),
        "hstripes": (yy // period) % 2 == 0,
        "dstripes": ((xx + yy) // period) % 2 == 0,
        "dots": ((yy // period) % 2 == 0) & ((xx // period) % 2 == 0),
        "checks": ((xx // period) + (yy // period)) % 2 == 0,
    }[kind]
    return np.where(dark, 0.55, 1.0).astype(np.float32)[..., None]


def _draw_shape(d: ImageDraw.ImageDraw, t: Thing, size: int) -> None:
    cx, cy = t.centre[0] * size, t.centre[1] * size
    h = t.extent * size / 2
    box = (cx - h, cy - h, cx + h, cy + h)
    if t.shape == "circle":
        d.ellipse(box, fill=255)
    elif t.shape == "ring":
        d.ellipse(box, fill=255)
        d.ellipse((cx - h * 0.55, cy - h * 0.55, cx + h * 0.55, cy + h * 0.55), fill=0)
    elif t.shape == "square":
        d.rectangle((cx - h * 0.9, cy - h * 0.9, cx + h * 0.9, cy + h * 0.9), fill=255)
    elif t.shape == "triangle":
        d.polygon([(cx, cy - h), (cx + h, cy + h * 0.8), (cx - h, cy + h * 0.8)], fill=255)
    elif t.shape == "bar":
        d.rectangle((cx - h, cy - h * 0.32, cx + h, cy + h * 0.32), fill=255)
    elif t.shape == "cross":
        w = h * 0.33
        d.rectangle((cx - w, cy - h, cx + w, cy + h), fill=255)
        d.rectangle((cx - h, cy - w, cx + h, cy + w), fill=255)
    elif t.shape == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, h, h * 0.42)
        d.polygon([(cx + r * np.cos(a), cy - r * np.sin(a)) for a, r in zip(angles, radii)], fill=255)
    elif t.shape == "crescent":
        d.ellipse(box, fill=255)
        d.ellipse((cx - h * 0.35, cy - h * 1.05, cx + h * 1.35, cy + h * 0.75), fill=0)
    else:
        raise ValueError(f"unknown shape {t.shape}")


def write_world(out_dir: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> tuple[Path, Path]:
    """Write the pairs and the labelled evaluation set under ``out_dir``.

    Returns ``(pairs_dir, eval_dir)``: an ``imagefolder`` with ``train/metadata.jsonl``
    (columns ``file_name``, ``caption``) and an ``imagefolder`` with
    ``{train,test}/<shape>/*.png`` plus ``templates.json``.
    """
    out = Path(out_dir)
    world = World(spec)
    pairs = out / "pairs" / "train"
    pairs.mkdir(parents=True)
    with open(pairs / "metadata.jsonl", "w") as meta:
        for i, (image, caption, template) in enumerate(world.pairs(spec.n_pairs)):
            name = f"{i:06d}.png"
            image.save(pairs / name)
            meta.write(json.dumps({"file_name": name, "caption": caption, "template": template}) + "\n")
    evaluation = out / "eval"
    for split, n in (("train", spec.n_eval_train), ("test", spec.n_eval_test)):
        for i in range(n):
            shape = SHAPES[i % len(SHAPES)]  # balanced classes
            things, background = world.scene(1, shape)
            folder = evaluation / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            world.draw(things, background).save(folder / f"{i:06d}.png")
    evaluation.mkdir(parents=True, exist_ok=True)
    (evaluation / "templates.json").write_text(json.dumps(list(ZERO_SHOT_TEMPLATES), indent=1))
    return out / "pairs", evaluation
