"""A user's own data, written by hand (not by our generators), through the CLI to the
leaderboard: the path a researcher takes with a real data set."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.conftest import run_cli

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (40, 60, 230), "yellow": (240, 220, 30)}
SHAPES = ("square", "circle")


def _drawing(shape: str, colour: str, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (40, 40), tuple(rng.randrange(60, 120) for _ in range(3)))
    x, y, r = rng.randrange(8, 24), rng.randrange(8, 24), rng.randrange(6, 12)
    draw = ImageDraw.Draw(image)
    (draw.rectangle if shape == "square" else draw.ellipse)((x, y, x + r, y + r), fill=COLOURS[colour])
    return image


def _write_clip_data(root: Path) -> tuple[Path, Path]:
    """An imagefolder of captioned pairs (metadata.jsonl) and a labelled class-folder eval set."""
    rng = random.Random(0)
    pairs = root / "my_pairs" / "train"
    pairs.mkdir(parents=True)
    with open(pairs / "metadata.jsonl", "w") as meta:
        for i in range(64):
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            _drawing(shape, colour, rng).save(pairs / f"img{i}.png")
            meta.write(json.dumps({"file_name": f"img{i}.png", "caption": f"a {colour} {shape} on grey"}) + "\n")
    evaluation = root / "my_eval"
    for split, n in (("train", 8), ("test", 8)):
        for shape in SHAPES:
            folder = evaluation / split / shape
            folder.mkdir(parents=True)
            for i in range(n):
                _drawing(shape, rng.choice(list(COLOURS)), rng).save(folder / f"{i}.png")
    return pairs.parent, evaluation


def _grid_to_board(config: Path, tmp_path: Path, track: str) -> list[dict]:
    store, out = tmp_path / "results.sqlite", tmp_path / "boards"
    r = run_cli("grid", str(config), "--preset", "smoke", "--store", str(store), "--cache", str(tmp_path / "cache"),
                "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("leaderboard", "--store", str(store), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return json.loads((out / track / "leaderboard.json").read_text())["entries"]


def test_user_imagefolder_pairs_reach_the_leaderboard(tmp_path):
    pairs, evaluation = _write_clip_data(tmp_path)
    config = tmp_path / "mine.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "track": "clip",
        "task": {"name": "clip-poisoning", "params": {"data": str(pairs), "eval_data": str(evaluation),
                                                      "n_train": 48, "n_clean": 16, "batch_size": 16}},
        "attacks": ["none", {"name": "targeted-poison", "params": {"n_targets": 2, "captions_per_target": 3}}],
        "defenses": ["none"],
        "evaluators": ["zero-shot", "linear-probe", "asr"],
        "seeds": 1,
    }))
    entries = _grid_to_board(config, tmp_path, "clip")
    assert {e["dataset"] for e in entries} == {"my_pairs"}
    assert {(e["attack"], e["evaluator"], e["metric"]) for e in entries} >= {
        ("none", "zero-shot", "top1"), ("none", "linear-probe", "top1"), ("targeted-poison", "asr", "asr")}


@pytest.mark.slow
def test_flat_eval_folder_and_a_named_data_set_reach_the_leaderboard(tmp_path):
    """Evaluation images in <class>/ folders only (split with data_seed), and the board's
    data set named by the config instead of the folder ('train' here)."""
    pairs, evaluation = _write_clip_data(tmp_path)
    flat = tmp_path / "flat_eval"
    for image in sorted(evaluation.rglob("*.png")):
        (flat / image.parent.name).mkdir(parents=True, exist_ok=True)
        image.rename(flat / image.parent.name / f"{image.parent.parent.name}_{image.name}")
    config = tmp_path / "mine.yaml"
    config.write_text(json.dumps({
        "track": "clip",
        "task": {"name": "clip-poisoning", "params": {"data": str(pairs / "train"), "eval_data": str(flat),
                                                      "data_name": "hand-drawn shapes", "n_train": 48,
                                                      "n_clean": 16, "batch_size": 16}},
        "attacks": ["none"], "defenses": ["none"], "evaluators": ["zero-shot", "linear-probe"], "seeds": 1,
    }))
    entries = _grid_to_board(config, tmp_path, "clip")
    assert {e["dataset"] for e in entries} == {"hand-drawn shapes"}
    assert {(e["evaluator"], e["metric"]) for e in entries} >= {("zero-shot", "top1"), ("linear-probe", "top1")}


@pytest.mark.slow
def test_user_market1501_folder_reaches_the_leaderboard(tmp_path):
    from benchbench.reid.synthetic import SyntheticSpec, generate

    root = tmp_path / "my_market"
    generate(root, SyntheticSpec(train_ids=10, test_ids=6, cameras=3, height=32, width=16, mean_images_per_id=6,
                                 distractors=4, junk=3, seed=7))
    config = tmp_path / "mine.yaml"
    config.write_text(json.dumps({
        "track": "reid", "task": {"name": "reid-adversarial", "params": {"data_root": str(root)}},
        "attacks": ["none", "metric-ifgsm"], "defenses": ["none"], "evaluators": ["reid-rank"], "seeds": 1,
    }))
    entries = _grid_to_board(config, tmp_path, "reid")
    assert {e["dataset"] for e in entries} == {"my_market"}
    assert {(e["attack"], e["evaluator"], e["metric"]) for e in entries} >= {
        ("none", "reid-rank", "mAP"), ("metric-ifgsm", "reid-rank", "rank1")}
