"""A deterministic synthetic pedestrian data set written in the Market-1501 layout.

The ReID track needs data that runs on a laptop CPU in minutes and that no download
provides, so this module draws it: every identity has its own clothing (shirt and
trouser colours, a pattern, sleeves, shorts, hair, skin, bag) and body shape; every
camera has its own lighting, colour cast, viewpoint mix, background, blur and sensor
noise, so matching across cameras is the real problem, as in Market-1501.

The output is exactly Market-1501's layout (``bounding_box_train/``, ``query/``,
``bounding_box_test/``; file names ``PPPP_cCsS_FFFFFF_NN.jpg``; junk images with id
``-1`` and distractors with id ``0000`` in the gallery), and is read back through
torchreid like real data (``benchbench.reid.data``), so the synthetic path tests the
real one. ``generate(..., layout=...)`` writes the same images in DukeMTMC-reID's or
MSMT17's layout instead (without junk images, which neither has), so those loaders are
exercised too, and two worlds of different seeds in two layouts make a cross-data-set
pair (docs/data.md). Counts are deliberately uneven, per identity (a long tail) and per
camera (an identity is mostly seen by one or two cameras), because the debiasing
defense balances exactly those.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from benchbench.reid.layouts import CAMERAS, MSMT_LISTS, Layout

GENERATOR_VERSION = "2"  # bump when the drawing changes: it is part of the data stage key
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
VIEWS = ("front", "back", "side")
SUPERSAMPLE = 4  # draw at 4x and downsample: smooth edges at 64x32
MSMT_DIRS = {"train": "train", "query": "test", "gallery": "test"}  # MSMT17_V1's image folders


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the generated files (hashed into the data stage key)."""

    train_ids: int = 100
    test_ids: int = 80
    cameras: int = 4
    height: int = 64
    width: int = 32
    mean_images_per_id: float = 12.0
    distractors: int = 60
    junk: int = 20
    seed: int = 0


@dataclass(frozen=True)
class Person:
    shirt: tuple[int, int, int]
    shirt2: tuple[int, int, int]  # pattern colour
    pattern: str  # solid | hstripes | vstripes | check | split
    trousers: tuple[int, int, int]
    shoes: tuple[int, int, int]
    hair: tuple[int, int, int]
    skin: tuple[int, int, int]
    long_sleeves: bool
    shorts: bool
    bag: str  # none | backpack | handbag
    bag_colour: tuple[int, int, int]
    build: float  # shoulder width factor
    stature: float  # height factor
    hair_long: bool


@dataclass(frozen=True)
class Camera:
    wall: tuple[int, int, int]
    floor: tuple[int, int, int]
    horizon: float  # fraction of the height where the floor starts
    gain: float
    tint: tuple[float, float, float]
    noise: float  # sensor noise std in /255 units
    blur: float
    views: tuple[float, float, float]  # probabilities of front, back, side
    scale: float  # person height as a fraction of the frame
    texture_seed: int


def _hsv_colour(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*s), rng.uniform(*v))
    return int(r * 255), int(g * 255), int(b * 255)


def _person(rng: np.random.Generator) -> Person:
    skins = [(241, 194, 160), (224, 172, 130), (198, 134, 95), (141, 85, 54), (95, 60, 40)]
    hairs = [(20, 15, 10), (60, 40, 20), (110, 75, 40), (200, 170, 110), (140, 140, 140)]
    dark_trousers = [(30, 30, 40), (40, 50, 90), (70, 70, 70), (90, 70, 50), (20, 20, 20)]
    trousers = dark_trousers[rng.integers(len(dark_trousers))] if rng.random() < 0.6 \
        else _hsv_colour(rng, (0.2, 0.8), (0.3, 0.9))
    return Person(
        shirt=_hsv_colour(rng, (0.0, 1.0), (0.25, 1.0)),
        shirt2=_hsv_colour(rng, (0.0, 1.0), (0.2, 1.0)),
        pattern=str(rng.choice(["solid", "solid", "hstripes", "vstripes", "check", "split"])),
        trousers=trousers,
        shoes=_hsv_colour(rng, (0.0, 0.4), (0.1, 0.9)),
        hair=hairs[rng.integers(len(hairs))],
        skin=skins[rng.integers(len(skins))],
        long_sleeves=bool(rng.random() < 0.5),
        shorts=bool(rng.random() < 0.25),
        bag=str(rng.choice(["none", "none", "backpack", "handbag"])),
        bag_colour=_hsv_colour(rng, (0.0, 0.9), (0.15, 0.9)),
        build=float(rng.uniform(0.8, 1.2)),
        stature=float(rng.uniform(0.88, 1.0)),
        hair_long=bool(rng.random() < 0.35),
    )


def _camera(rng: np.random.Generator) -> Camera:
    views = rng.dirichlet([0.8, 0.8, 0.8])
    return Camera(
        wall=_hsv_colour(rng, (0.0, 0.5), (0.3, 0.9)),
        floor=_hsv_colour(rng, (0.0, 0.4), (0.2, 0.7)),
        horizon=float(rng.uniform(0.55, 0.8)),
        gain=float(rng.uniform(0.65, 1.25)),
        tint=tuple(float(t) for t in rng.uniform(0.8, 1.2, size=3)),
        noise=float(rng.uniform(1, 4)),
        blur=float(rng.uniform(0.0, 0.9)),
        views=tuple(float(v) for v in views),
        scale=float(rng.uniform(0.8, 0.95)),
        texture_seed=int(rng.integers(2**31)),
    )


def _background(cam: Camera, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Wall above the horizon, floor below, plus the camera's fixed clutter, shifted per image."""
    img = np.empty((h, w, 3), np.float32)
    y0 = int(cam.horizon * h)
    img[:y0] = cam.wall
    img[y0:] = cam.floor
    tex_rng = np.random.default_rng(cam.texture_seed)
    clutter = tex_rng.normal(0, 18, size=(h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    clutter = np.kron(clutter, np.ones((8, 8, 1), np.float32))
    dy, dx = rng.integers(0, 8, size=2)
    img += clutter[dy:dy + h, dx:dx + w]
    return img


def _draw_person(draw: ImageDraw.ImageDraw, p: Person, view: str, h: int, w: int, cam: Camera,
                 rng: np.random.Generator) -> None:
    """Draw one pedestrian (head, torso with pattern, arms, legs, shoes, bag) in place."""
    height = h * cam.scale * p.stature * rng.uniform(0.95, 1.05)
    cx = w / 2 + rng.normal(0, w * 0.04)
    top = (h - height) / 2 + rng.normal(0, h * 0.02)
    side = view == "side"
    shoulder = w * 0.30 * p.build * (0.7 if side else 1.0)
    head_r = height * 0.065
    neck = top + 2 * head_r
    waist = top + height * 0.48
    feet = top + height
    stride = rng.uniform(0.0, 0.12 if side else 0.05) * w

    def box(x0, y0, x1, y1, fill):
        draw.rectangle([x0, y0, x1, y1], fill=fill)

    # legs and shoes
    leg_w = shoulder * 0.42
    knee = waist + (feet - waist) * 0.5
    for sgn in (-1, 1):
        lx = cx + sgn * (shoulder * 0.25 + stride / 2) - leg_w / 2
        box(lx, waist, lx + leg_w, knee if p.shorts else feet - height * 0.04, p.trousers)
        if p.shorts:
            box(lx, knee, lx + leg_w, feet - height * 0.04, p.skin)
        box(lx - 1, feet - height * 0.04, lx + leg_w + 1, feet, p.shoes)
    # arms (behind the torso on the far side)
    arm_w = shoulder * 0.28
    for sgn in ((-1, 1) if not side else (1,)):
        ax = cx + sgn * (shoulder / 2 + arm_w / 2) - arm_w / 2 if not side else cx - arm_w / 2
        elbow = neck + (waist - neck) * 0.55
        box(ax, neck + 1, ax + arm_w, elbow, p.shirt)
        box(ax, elbow, ax + arm_w, waist + height * 0.08, p.shirt if p.long_sleeves else p.skin)
    # torso with its pattern
    x0, x1 = cx - shoulder / 2, cx + shoulder / 2
    box(x0, neck, x1, waist, p.shirt)
    if p.pattern == "hstripes":
        n = 5
        for i in range(0, n, 2):
            y = neck + (waist - neck) * i / n
            box(x0, y, x1, y + (waist - neck) / n, p.shirt2)
    elif p.pattern == "vstripes":
        n = 4
        for i in range(0, n, 2):
            x = x0 + (x1 - x0) * i / n
            box(x, neck, x + (x1 - x0) / n, waist, p.shirt2)
    elif p.pattern == "check":
        for i in range(4):
            for j in range(3):
                if (i + j) % 2:
                    box(x0 + (x1 - x0) * j / 3, neck + (waist - neck) * i / 4,
                        x0 + (x1 - x0) * (j + 1) / 3, neck + (waist - neck) * (i + 1) / 4, p.shirt2)
    elif p.pattern == "split":
        box(x0, (neck + waist) / 2, x1, waist, p.shirt2)
    # bag: a backpack covers the back (seen from behind or the side), a handbag hangs at the hip
    if p.bag == "backpack" and view != "front":
        bw = shoulder * (0.7 if view == "back" else 0.35)
        bx = cx - bw / 2 if view == "back" else x1 - bw * 0.3
        box(bx, neck + 2, bx + bw, waist - 2, p.bag_colour)
    elif p.bag == "handbag":
        hx = x1 if view != "back" else x0 - shoulder * 0.3
        box(hx, waist - height * 0.05, hx + shoulder * 0.3, waist + height * 0.08, p.bag_colour)
    # head and hair
    draw.ellipse([cx - head_r, top, cx + head_r, top + 2 * head_r], fill=p.skin)
    hair_bottom = top + 2 * head_r * (0.95 if view == "back" else 0.4)
    if p.hair_long:
        hair_bottom = max(hair_bottom, neck + height * 0.05) if view == "back" else hair_bottom
    draw.chord([cx - head_r * 1.05, top - 1, cx + head_r * 1.05, hair_bottom + head_r * 0.6], 180, 360,
               fill=p.hair)
    if view == "back":
        box(cx - head_r, top + head_r, cx + head_r, hair_bottom, p.hair)


def render(p: Person, cam: Camera, h: int, w: int, rng: np.random.Generator) -> Image.Image:
    """One image of person ``p`` seen by camera ``cam`` (a fresh pose, offset and noise)."""
    view = VIEWS[rng.choice(3, p=cam.views)]
    H, W = h * SUPERSAMPLE, w * SUPERSAMPLE
    canvas = Image.fromarray(np.clip(_background(cam, H, W, rng), 0, 255).astype(np.uint8))
    _draw_person(ImageDraw.Draw(canvas), p, view, H, W, cam, rng)
    if rng.random() < 0.5:
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = canvas.resize((w, h), Image.Resampling.LANCZOS)
    if cam.blur > 0.1:
        img = img.filter(ImageFilter.GaussianBlur(cam.blur))
    arr = np.asarray(img, np.float32)
    gain = cam.gain * rng.uniform(0.9, 1.1)
    arr = arr * gain * np.asarray(cam.tint, np.float32) + rng.normal(0, cam.noise, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _camera_counts(rng: np.random.Generator, n: int, cams: int, popularity: np.ndarray,
                   min_cams: int) -> np.ndarray:
    """Split ``n`` images of one identity over cameras, unevenly, using >= ``min_cams``."""
    share = rng.dirichlet(popularity * 2.0)
    counts = np.zeros(cams, int)
    first = rng.choice(cams, size=min_cams, replace=False, p=popularity)
    counts[first] = 1
    counts += rng.multinomial(n - min_cams, share)
    return counts


def _pick_queries(per_cam: np.ndarray) -> set[tuple[int, int]]:
    """One query per camera of an identity, kept only while every query still has a
    gallery match from another camera (Market-1501's protocol needs one)."""
    query_cams: list[int] = []
    for c in np.flatnonzero(per_cam):
        cams = [*query_cams, int(c)]
        gallery = per_cam.copy()
        gallery[cams] -= 1
        if all(gallery.sum() - gallery[q] >= 1 for q in cams):
            query_cams = cams
    return {(c, 0) for c in query_cams}


def _name(pid: int, cam: int, frame: int, bbox: int) -> str:
    pid_txt = "-1" if pid == -1 else f"{pid:04d}"
    return f"{pid_txt}_c{cam + 1}s1_{frame:06d}_{bbox:02d}.jpg"


def _path(layout: Layout, split: str, pid: int, cam: int, frame: int, index: int) -> str:
    """An image's path under the root in ``layout`` (Market-1501's is ``_name``'s).

    ``index`` counts the identity's images in the order they are written, which is
    Market-1501's name order (camera, then frame): MSMT17's names sort by it, so every
    layout lists a split in the same order."""
    if layout == "market1501":
        return f"{SPLIT_DIRS[split]}/{_name(pid, cam, frame, 1)}"
    if layout == "dukemtmcreid":
        return f"{SPLIT_DIRS[split]}/{pid:04d}_c{cam + 1}_f{frame:07d}.jpg"
    return f"{MSMT_DIRS[split]}/{pid:04d}/{pid:04d}_{index:03d}_{cam + 1:02d}_0113morning_{frame:04d}_0.jpg"


def generate(root: str | Path, spec: SyntheticSpec = SyntheticSpec(), layout: Layout = "market1501") -> dict:
    """Write the data set under ``root`` and return its summary (also saved as ``synthetic.json``).

    Train and test identities are disjoint, as in Market-1501. Every test identity is
    seen by at least two cameras; for each of its cameras one image becomes a query as
    long as the gallery keeps an image of it from another camera. ``layout`` names the
    files as that data set does (MSMT17: ``train/``, ``test/`` and its list files); the
    images are the same in every layout, and only Market-1501's has junk images.
    """
    max_cams = CAMERAS[layout]
    if not 2 <= spec.cameras <= max_cams:
        raise ValueError(f"cameras must be 2..{max_cams} (queries need a second camera; {layout} "
                         f"file names hold cameras 1..{max_cams})")
    if layout == "market1501" and spec.train_ids + spec.test_ids > 1500:
        raise ValueError("at most 1500 identities fit Market-1501's id range")
    if spec.train_ids + spec.test_ids > 9999:
        raise ValueError("at most 9999 identities fit four-digit id names")
    root = Path(root)
    folders = SPLIT_DIRS if layout != "msmt17" else MSMT_DIRS
    for d in folders.values():
        (root / d).mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {split: [] for split in SPLIT_DIRS}  # MSMT17's list lines
    written: Counter[int] = Counter()  # images per identity so far
    rng = np.random.default_rng([spec.seed, 0])
    cameras = [_camera(np.random.default_rng([spec.seed, 1, c])) for c in range(spec.cameras)]
    popularity = rng.dirichlet(np.full(spec.cameras, 1.5))  # busy and quiet cameras
    pids = rng.permutation(np.arange(1, spec.train_ids + spec.test_ids + 1))
    train_pids, test_pids = sorted(pids[:spec.train_ids]), sorted(pids[spec.train_ids:])
    frame = 0
    counts = {"train": 0, "query": 0, "gallery": 0}

    def write(split: str, pid: int, person: Person, cam: int, img_rng: np.random.Generator) -> None:
        nonlocal frame
        frame += 1
        img = render(person, cameras[cam], spec.height, spec.width, img_rng)
        path = _path(layout, split, pid, cam, frame, written[pid])
        written[pid] += 1
        (root / path).parent.mkdir(exist_ok=True)
        img.save(root / path, quality=92)
        if layout == "msmt17":
            lists[split].append(f"{path.split('/', 1)[1]} {pid}\n")
        counts[split] += 1

    for is_test, group in ((False, train_pids), (True, test_pids)):
        for pid in group:
            id_rng = np.random.default_rng([spec.seed, 2, int(pid)])
            person = _person(id_rng)
            n = int(np.clip(round(id_rng.lognormal(np.log(spec.mean_images_per_id) - 0.18, 0.6)), 3, 60))
            per_cam = _camera_counts(id_rng, n, spec.cameras, popularity, min_cams=2)
            images = [(c, k) for c in range(spec.cameras) for k in range(per_cam[c])]
            query = _pick_queries(per_cam) if is_test else set()
            for c, k in images:
                split = ("query" if (c, k) in query else "gallery") if is_test else "train"
                write(split, int(pid), person, c, np.random.default_rng([spec.seed, 3, int(pid), c, k]))
    # distractors (id 0000: people who are never queried) and junk (id -1: bad crops)
    for i in range(spec.distractors):
        r = np.random.default_rng([spec.seed, 4, i])
        write("gallery", 0, _person(r), int(r.integers(spec.cameras)), r)
    for i in range(spec.junk if layout == "market1501" else 0):
        r = np.random.default_rng([spec.seed, 5, i])
        cam = int(r.integers(spec.cameras))
        frame += 1
        arr = np.asarray(render(_person(r), cameras[cam], spec.height, spec.width, r))
        crop = arr[: spec.height // 3]  # a head-and-shoulders fragment, as Market's junk boxes
        Image.fromarray(crop).resize((spec.width, spec.height)).save(
            root / SPLIT_DIRS["gallery"] / _name(-1, cam, frame, 1), quality=92)
    summary = {"spec": asdict(spec), "images": counts, "train_ids": len(train_pids),
               "test_ids": len(test_pids), "junk": spec.junk, "distractors": spec.distractors}
    if layout != "market1501":
        summary.update(layout=layout, junk=0)
    if layout == "msmt17":
        for split, name in zip(SPLIT_DIRS, MSMT_LISTS):
            (root / name).write_text("".join(lists[split]))
        (root / "list_val.txt").write_text("")  # torchreid's MSMT17 class opens it; no validation split
    (root / "synthetic.json").write_text(json.dumps(summary, indent=1))
    return summary
