"""Does the streamed CLIP path hold memory flat as the data grows, at the in-memory path's speed? (issue #12)

Writes the embedded world's scenes and captions as WebDataset shards, as img2dataset
writes them (64 px JPEG + .txt, 1000 pairs per shard), of 20k and 160k pairs, plus the
world's labelled evaluation set; then runs one CLIP cell per row below, each in a fresh
process, through the grid's own path (``run_cell``): attack none, defense none,
zero-shot and linear-probe, the default preset's protocol but 1 epoch, every pair but
``n_clean`` in training, ``num_workers`` 1 (one core trains, one decodes):

- ``stream``: ``in_memory_below: 0`` (images decoded in the loader worker as training reads them);
- ``in-memory``: the same shards decoded once into memory (``in_memory_below`` above the set).

Per run it prints the peak RSS of the cell's process and of its loader worker
(``getrusage``: the largest child), training pairs/s (training steps x batch over the
epoch's seconds, from the training log, so data writing, indexing and evaluation are
not in it) and the cell's wall time. Acceptance: the two streamed runs' peak RSS within
15% of each other, and streaming's pairs/s at least 0.8x the in-memory path's on 20k.

    PYTHONPATH=.:plugins .venv/bin/python benchmarks/scale_clip.py > benchmarks/results/scale_clip.txt
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchbench.cells import CellSpec, ComponentRef
from benchbench.clip.shards import write_shards
from benchbench.clip.synthetic import SyntheticSpec, World, write_world
from benchbench.clip.task import ClipPoisoningTask

SIZES = (20_000, 160_000)
N_CLEAN = 500  # the default preset's
PER_SHARD = 1000
SIDE = 64


def write_data(root: Path, n: int) -> Path:
    """``n`` pairs of the world (seed 0) as shards under ``root/shards-<n>``."""
    folder = root / f"shards-{n}"
    if not folder.is_dir():
        world = World(SyntheticSpec(n_pairs=n, image_size=SIDE, seed=0))
        write_shards(((image, caption) for image, caption, _ in world.pairs(n)), folder, PER_SHARD)
    return folder


def run_one(shards: Path, eval_data: Path, n: int, streamed: bool, cache: Path) -> dict:
    """One cell in this process; returns what the parent prints."""
    from benchbench.registry import load_registry
    from benchbench.runner import Environment, run_cell

    params = {"data": str(shards), "eval_data": str(eval_data), "n_train": n - N_CLEAN, "n_clean": N_CLEAN,
              "epochs": 1, "num_workers": 1, "in_memory_below": 0 if streamed else n + 1}
    spec = CellSpec("clip", ComponentRef("clip-poisoning", params), ComponentRef("none"), ComponentRef("none"),
                    (ComponentRef("zero-shot"), ComponentRef("linear-probe")), 0, "default", 1)
    start = time.perf_counter()
    result = run_cell(spec.to_dict(), Environment(cache_root=str(cache), progress=False), load_registry())
    wall = time.perf_counter() - start
    if result["status"] != "ok":
        raise SystemExit(result["traceback"])
    log = json.loads(next(cache.glob("clip-model/*/train_log.json")).read_text())
    epoch = log[-1]
    batch = ClipPoisoningTask.Params().batch_size
    return {"pairs_per_s": epoch["steps"] * batch / epoch["seconds"], "wall_s": wall,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "zero_shot_top1": result["metrics"]["zero-shot"]["top1"]["value"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="where to write the shards (default: a temporary folder)")
    parser.add_argument("--child", nargs=4, metavar=("SHARDS", "EVAL", "N", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        shards, eval_data, n, mode = args.child
        with tempfile.TemporaryDirectory() as cache:
            print(json.dumps(run_one(Path(shards), Path(eval_data), int(n), mode == "stream", Path(cache))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        root.mkdir(parents=True, exist_ok=True)
        eval_data = root / "world" / "eval"
        if not eval_data.is_dir():
            write_world(root / "world", SyntheticSpec(n_pairs=1, image_size=SIDE, seed=0))
        print(f"# CPU: {os.cpu_count()} cores; torch threads 1 per cell, 1 loader worker; machine otherwise idle")
        print(f"{'run':<22}{'pairs/s':>9}{'peak RSS MiB':>14}{'worker MiB':>12}{'wall s':>9}{'zero-shot':>11}")
        rows = {}
        for n, mode in ((SIZES[0], "in-memory"), (SIZES[0], "stream"), (SIZES[1], "stream")):
            start = time.perf_counter()
            shards = write_data(root, n)
            written = time.perf_counter() - start
            out = subprocess.run([sys.executable, __file__, "--child", str(shards), str(eval_data), str(n), mode],
                                 capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            if out.returncode:
                raise SystemExit(out.stderr)
            r = rows[(n, mode)] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{f'{n // 1000}k {mode}':<22}{r['pairs_per_s']:>9.0f}{r['rss_mib']:>14.0f}"
                  f"{r['worker_rss_mib']:>12.0f}{r['wall_s']:>9.0f}{r['zero_shot_top1']:>11.3f}"
                  + (f"   (shards written in {written:.0f} s)" if written > 1 else ""), flush=True)
        small, large = rows[(SIZES[0], "stream")], rows[(SIZES[1], "stream")]
        growth = large["rss_mib"] / small["rss_mib"] - 1
        speed = small["pairs_per_s"] / rows[(SIZES[0], "in-memory")]["pairs_per_s"]
        print(f"\npeak RSS, 160k vs 20k streamed: {growth:+.1%} (acceptance: within 15%) -> "
              f"{'holds' if abs(growth) < 0.15 else 'FAILS'}")
        print(f"pairs/s, streamed vs in memory (20k): {speed:.2f}x (acceptance: >= 0.8x) -> "
              f"{'holds' if speed >= 0.8 else 'FAILS'}")


if __name__ == "__main__":
    main()
