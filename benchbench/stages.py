"""Content-hashed stage cache: shared work in a grid is done once.

A stage is one step of a cell's pipeline (synthetic data, poisoned data, a trained
model, a diffusion model...). Its key hashes everything that determines its output:
the stage name, the identities (name + version + params) of the components involved,
the keys of the stages it consumes, the seed and the cell's torch thread count. Two
cells that need the same stage (every defense needs the same poisoned data set; every
ReID attack needs the same trained model) get one directory and the second one only
loads it. A build runs on forked global RNGs, so building a stage or hitting it leaves
the cell's random state the same.

A builder writes its artifacts (safetensors, JSON, Arrow via ``datasets.save_to_disk``;
never pickle) into a temporary directory that is renamed into place when it returns,
so a killed build never leaves a half-written stage behind. A file lock per key makes
concurrent workers (process pool, Ray workers on a shared path) build a stage once.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from benchbench.cells import stable_hash
from benchbench.numerics import DEFAULT_THREADS, isolated_rng

META = "stage.json"


class Stage:
    """A finished stage: its directory and key. ``upstream`` for the next stage's key."""

    def __init__(self, name: str, key: str, path: Path, hit: bool):
        self.name, self.key, self.path, self.hit = name, key, path, hit

    def __repr__(self) -> str:
        return f"<Stage {self.name}/{self.key} {'hit' if self.hit else 'built'}>"


class StageCache:
    def __init__(self, root: str | Path, threads: int = DEFAULT_THREADS):
        self.root = Path(root)
        self.threads = threads  # the cell's torch thread count: in every key (float sums depend on it)
        self.root.mkdir(parents=True, exist_ok=True)
        self.stats: Counter[tuple[str, str]] = Counter()  # (stage name, "hit"|"build")

    def key(self, name: str, parts: dict[str, Any]) -> str:
        return stable_hash({"stage": name, "threads": self.threads, **parts})

    def get_or_build(self, name: str, parts: dict[str, Any], build: Callable[[Path], None]) -> Stage:
        """Return the stage for ``parts``, calling ``build(tmp_dir)`` only if it is missing.

        ``parts`` must be JSON-able and hold everything the output depends on: component
        identities (``Component.identity()``), upstream ``Stage.key`` values, the seed.
        """
        key = self.key(name, parts)
        final = self.root / name / key
        if (final / META).exists():
            self.stats[(name, "hit")] += 1
            return Stage(name, key, final, hit=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            if (final / META).exists():  # another worker built it while we waited
                self.stats[(name, "hit")] += 1
                return Stage(name, key, final, hit=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
            try:
                start = time.perf_counter()
                with isolated_rng():  # building, unlike a hit, must not shift the cell's RNGs
                    build(tmp)
                meta = {"stage": name, "key": key, "parts": parts,
                        "build_seconds": round(time.perf_counter() - start, 3)}
                (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
                if final.exists():  # leftovers of an interrupted build without META
                    shutil.rmtree(final)
                tmp.rename(final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        self.stats[(name, "build")] += 1
        return Stage(name, key, final, hit=False)

    def builds(self, name: str | None = None) -> int:
        """How many stages this process built (all, or of one name): tests count these."""
        return sum(v for (n, what), v in self.stats.items() if what == "build" and name in (None, n))
