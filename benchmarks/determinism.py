"""Are a grid's numbers a function of its config alone? (issue #14)

Runs the smoke grid of each track twice through the ``benchbench grid`` CLI, each from
an empty stage cache:

- run A: ``--jobs 1`` (in-process), stage cache (so the synthetic data folders the
  tasks read back) on the disk under ``--out``;
- run B: ``--jobs 2`` (two spawned workers), stage cache on tmpfs (``/dev/shm``), whose
  directory listings come back in another order than ext4's.

and compares every stored metric value of the two stores, cell key by cell key (both
runs have the same config, so the same keys). It prints the filesystems, whether the
ReID training folder really lists in a different order on them, and per track
"identical / total" plus the first differences. Before issue #14 the ReID grid
differed in 139 of 245 values across filesystems and 102 of 189 across ``--jobs``.

    PYTHONPATH=.:plugins .venv/bin/python benchmarks/determinism.py > benchmarks/results/determinism.txt
"""
from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRIDS = {"CLIP": "configs/clip-default.yaml", "ReID": "configs/reid-default.yaml"}
REID_TRAIN = "reid-synthetic/*/bounding_box_train"


def filesystem(path: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True).stdout.strip()


def run_grid(config: str, cache: Path, store: Path, jobs: int) -> float:
    """One ``benchbench grid`` at the smoke preset from an empty cache; its wall seconds."""
    shutil.rmtree(cache, ignore_errors=True)
    store.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchbench.cli", "grid", config, "--preset", "smoke",
                    "--jobs", str(jobs), "--cache", str(cache), "--store", str(store), "--no-progress"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def metric_values(store: Path) -> dict[tuple[str, str, str], float]:
    with closing(sqlite3.connect(store)) as db:
        return {(k, e, m): v for k, e, m, v in db.execute("SELECT cell_key, evaluator, metric, value FROM metrics")}


def listing(cache: Path) -> list[str]:
    """The ReID synthetic training folder in the filesystem's own order (os.listdir)."""
    (folder,) = cache.glob(REID_TRAIN)
    return os.listdir(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/benchbench-determinism"), help="run A (disk)")
    parser.add_argument("--tmpfs", type=Path, default=Path("/dev/shm/benchbench-determinism"), help="run B")
    args = parser.parse_args()
    runs = {"A": (args.out, 1), "B": (args.tmpfs, 2)}
    for name, (root, jobs) in runs.items():
        root.mkdir(parents=True, exist_ok=True)
        print(f"run {name}: --jobs {jobs}, stage cache on {filesystem(root)} ({root})")
    failures = 0
    for track, config in GRIDS.items():
        values, seconds = {}, {}
        for name, (root, jobs) in runs.items():
            store = root / f"{track.lower()}.sqlite"
            seconds[name] = run_grid(config, root / "cache", store, jobs)
            values[name] = metric_values(store)
        a, b = values["A"], values["B"]
        same = sum(1 for k in a if k in b and a[k] == b[k])
        print(f"\n{track} ({config}, smoke): {same}/{len(a)} identical "
              f"(run A {len(a)} values, run B {len(b)}; {seconds['A'] / 60:.1f} and {seconds['B'] / 60:.1f} min)")
        if track == "ReID":
            order_a, order_b = listing(args.out / "cache"), listing(args.tmpfs / "cache")
            assert sorted(order_a) == sorted(order_b)
            print(f"  ReID training folder listing order differs between the two filesystems: "
                  f"{order_a != order_b} ({len(order_a)} files)")
        differ = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        for key in differ[:10]:
            print(f"  differs: cell {key[0]} {key[1]}/{key[2]}: A {a.get(key)} B {b.get(key)}")
        failures += bool(differ)
    for root, _ in runs.values():
        shutil.rmtree(root / "cache", ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
