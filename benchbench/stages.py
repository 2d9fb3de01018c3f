"""Content-hashed stage cache: shared work in a grid is done once.

A stage is one step of a cell's pipeline (synthetic data, poisoned data, a trained
model, a diffusion model...). Its key hashes everything that determines its output:
the stage name, the identities (name + version + params) of the components involved,
the keys of the stages it consumes, the seed, the cell's torch thread count and its
precision (when not fp32, so older keys stay as they were). Two
cells that need the same stage (every defense needs the same poisoned data set; every
ReID attack needs the same trained model) get one directory and the second one only
loads it. A build runs on forked global RNGs, so building a stage or hitting it leaves
the cell's random state the same.

A builder writes its artifacts (safetensors, JSON, Arrow via ``datasets.save_to_disk``;
never pickle) into a temporary directory that is renamed into place when it returns,
so a killed build never leaves a half-written stage behind. Its files and directories
are fsynced before the rename (and the parent after it): without that, a power loss
can leave a renamed stage whose files are empty. A file lock per key makes concurrent
workers (process pool, Ray workers on a shared path) build a stage once.

A kill during a build leaves its temporary ``.KEY-xxxx`` folder; opening the cache
removes those whose key lock is free (a live build holds its lock, so its folder stays).
A long build (a trained model) may checkpoint into ``KEY.checkpoints`` next to it
(``checkpoint_folder``, ``benchbench.checkpoint``) and resume from there after a kill;
that folder is deleted once the stage is built, unless the cache keeps checkpoints.

A grid holds ``.running/HOST-PID.lock`` for as long as it runs (``in_use``), because it
loads stages without a lock: ``prune`` refuses while any grid holds one, and holds
``.prune.lock`` while deleting so that no grid starts in the middle (``benchbench cache``).

``stage.json`` lists every file of the stage with its size. A hit whose files are
missing or of another size (a truncated copy, a disk that filled up) is not loaded:
it raises a ``CacheError`` naming the folder and the fix (delete it and re-run, which
rebuilds it). Sizes catch truncation, not a flipped byte; stages written before the
list existed are loaded unchecked. A full disk while building is a ``CacheError`` too.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock, Timeout

from benchbench import distributed
from benchbench.cells import stable_hash
from benchbench.errors import DataError
from benchbench.numerics import DEFAULT_THREADS, isolated_rng
from benchbench.precision import DEFAULT_PRECISION

META = "stage.json"
RUNNING = ".running"  # one held lock file per grid using the cache
PRUNE_LOCK = ".prune.lock"


class CacheError(DataError):
    """The cache itself is broken (a corrupt stage, a full disk), not one cell: every
    later cell would fail the same way, so the runner lets it stop the grid."""


class Stage:
    """A finished stage: its directory and key. ``upstream`` for the next stage's key."""

    def __init__(self, name: str, key: str, path: Path, hit: bool):
        self.name, self.key, self.path, self.hit = name, key, path, hit

    def __repr__(self) -> str:
        return f"<Stage {self.name}/{self.key} {'hit' if self.hit else 'built'}>"


class StageCache:
    def __init__(self, root: str | Path, threads: int = DEFAULT_THREADS, precision: str = DEFAULT_PRECISION,
                 keep_checkpoints: bool = False, processes: int = 1):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"stage cache {self.root} is a file, not a directory; pass --cache "
                            f"a directory path (it is created if missing)")
        self.threads = threads  # the cell's torch thread count: in every key (float sums depend on it)
        self.precision = precision  # in every key unless fp32 (the keys from before precision existed)
        self.processes = processes  # in every key when > 1: a stage several processes built together
        self.keep_checkpoints = keep_checkpoints  # keep a built stage's checkpoint folder (else deleted)
        self.root.mkdir(parents=True, exist_ok=True)
        self.stats: Counter[tuple[str, str]] = Counter()  # (stage name, "hit"|"build")
        self.remove_stale_builds()

    def remove_stale_builds(self) -> int:
        """Delete the ``.KEY-xxxx`` temporary folders of killed builds; return how many.

        A temporary folder exists only while its builder holds ``KEY.lock``, so one whose
        lock we can take at once belongs to a dead build; one whose lock is held is live.
        """
        removed = 0
        for stage_dir in (d for d in self.root.iterdir() if d.is_dir()):
            for tmp in (t for t in stage_dir.glob(".*-*") if t.is_dir()):
                key = tmp.name[1:].split("-", 1)[0]
                try:
                    with FileLock(str(stage_dir / key) + ".lock", timeout=0):
                        shutil.rmtree(tmp, ignore_errors=True)
                        removed += 1
                except Timeout:
                    continue
        return removed

    def key(self, name: str, parts: dict[str, Any]) -> str:
        numerics = {"threads": self.threads}
        if self.precision != DEFAULT_PRECISION:
            numerics["precision"] = self.precision
        if self.processes > 1:
            numerics["processes"] = self.processes
        return stable_hash({"stage": name, **numerics, **parts})

    def checkpoint_folder(self, name: str, parts: dict[str, Any]) -> Path:
        """Where the build of stage ``(name, parts)`` may keep checkpoints: ``KEY.checkpoints``
        next to the stage, written only under the stage's build lock."""
        return self.root / name / f"{self.key(name, parts)}.checkpoints"

    def get_or_build(self, name: str, parts: dict[str, Any], build: Callable[[Path], None]) -> Stage:
        """Return the stage for ``parts``, calling ``build(tmp_dir)`` only if it is missing.

        ``parts`` must be JSON-able and hold everything the output depends on: component
        identities (``Component.identity()``), upstream ``Stage.key`` values, the seed.
        """
        key = self.key(name, parts)
        final = self.root / name / key
        if distributed.world_size() > 1:
            return self._get_or_build_together(name, key, parts, final, build)
        if (final / META).exists():
            return self._hit(name, key, final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(final) + ".lock"):
                if (final / META).exists():  # another worker built it while we waited
                    return self._hit(name, key, final)
                self._build_locked(name, key, parts, final, build)
        except CacheError:  # from a stage this builder needed: it names that stage
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a full disk
            if not is_disk_full(exc):
                raise
            raise CacheError(f"disk full while building stage {name} in {final.parent}: free space "
                             f"there or pass --cache on a bigger disk, then re-run") from None
        self.stats[(name, "build")] += 1
        return Stage(name, key, final, hit=False)

    def _build_locked(self, name: str, key: str, parts: dict[str, Any], final: Path,
                      build: Callable[[Path], None]) -> None:
        """Build under the key's lock, then drop the build's checkpoints (the stage is durable)."""
        self._build(name, key, parts, final, build)
        self._drop_checkpoints(key, final)

    def _drop_checkpoints(self, key: str, final: Path) -> None:
        if not self.keep_checkpoints:
            shutil.rmtree(final.parent / f"{key}.checkpoints", ignore_errors=True)

    def _get_or_build_together(self, name: str, key: str, parts: dict[str, Any], final: Path,
                               build: Callable[[Path], None]) -> Stage:
        """``get_or_build`` for one cell running on several processes (``benchbench.distributed``).

        A build may be a training whose steps are collectives, so every rank must build or
        none. Rank 0 takes the key's lock and decides (built or not) for all; on a miss
        every rank runs ``build``, rank 0 into the stage's temporary folder (renamed into
        place as on one process), the others into a scratch folder they delete, and all
        return rank 0's stage. Rank 0 alone writes checkpoints (``Checkpointer.save``)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(final) + ".lock")
        if distributed.is_main():
            lock.acquire()
        try:
            if distributed.broadcast_object((final / META).exists()):
                distributed.barrier()  # rank 0 holds the lock until every rank has read the stage's state
                return self._hit(name, key, final)
            if distributed.is_main():
                self._build(name, key, parts, final, build)
            else:
                with tempfile.TemporaryDirectory(prefix=f".{key}-rank{distributed.rank()}-",
                                                 dir=final.parent) as scratch, isolated_rng():
                    build(Path(scratch))
            distributed.barrier()  # rank 0's stage is in place; no rank reads the build's checkpoints now
            if distributed.is_main():  # (a build may copy them: the others would read a folder being deleted)
                self._drop_checkpoints(key, final)
        finally:
            if distributed.is_main():
                lock.release()
        self.stats[(name, "build")] += 1
        return Stage(name, key, final, hit=False)

    def find(self, name: str, parts: dict[str, Any]) -> Stage | None:
        """The stage for ``parts`` if it is built, or once its builder finishes if another
        worker is building it now (waiting beats building it twice); ``None`` otherwise.
        Never builds."""
        key = self.key(name, parts)
        final = self.root / name / key
        if not (final / META).exists():
            if not final.parent.is_dir():
                return None
            lock = FileLock(str(final) + ".lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:  # a builder holds it: wait for its result
                with lock:
                    pass
            else:
                lock.release()
            if not (final / META).exists():
                return None
        return self._hit(name, key, final)

    def _build(self, name: str, key: str, parts: dict[str, Any], final: Path,
               build: Callable[[Path], None]) -> None:
        """Build into a temporary folder, make it durable, then rename it into place."""
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        try:
            start = time.perf_counter()
            with isolated_rng():  # building, unlike a hit, must not shift the cell's RNGs
                build(tmp)
            meta = {"stage": name, "key": key, "parts": parts,
                    "build_seconds": round(time.perf_counter() - start, 3), "files": _sync_tree(tmp)}
            _write_synced(tmp / META, json.dumps(meta, indent=1, sort_keys=True, default=str))
            _fsync(tmp)
            if final.exists():  # leftovers of an interrupted build without META
                shutil.rmtree(final)
            tmp.rename(final)
            _fsync(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _hit(self, name: str, key: str, final: Path) -> Stage:
        _check_complete(final)
        self.stats[(name, "hit")] += 1
        return Stage(name, key, final, hit=True)

    def builds(self, name: str | None = None) -> int:
        """How many stages this process built (all, or of one name): tests count these."""
        return sum(v for (n, what), v in self.stats.items() if what == "build" and name in (None, n))


@contextmanager
def in_use(root: str | Path) -> Iterator[None]:
    """Mark the cache as used by this grid until the block ends (see the module docstring).
    The lock is an OS file lock, so a killed grid releases it."""
    running = Path(root) / RUNNING
    running.mkdir(parents=True, exist_ok=True)
    mine = FileLock(str(running / f"{socket.gethostname()}-{os.getpid()}.lock"))
    with FileLock(str(Path(root) / PRUNE_LOCK)):  # waits for a prune in progress
        mine.acquire()
    try:
        yield
    finally:
        mine.release()
        Path(mine.lock_file).unlink(missing_ok=True)


def _users(root: Path) -> list[str]:
    """The grids holding the cache now ("HOST-PID"); lock files of dead grids are removed."""
    users = []
    for lock in sorted((root / RUNNING).glob("*.lock")):
        try:
            with FileLock(str(lock), timeout=0):
                lock.unlink(missing_ok=True)
        except Timeout:
            users.append(lock.stem)
    return users


@dataclass(frozen=True)
class StoredStage:
    """A finished stage folder, as ``benchbench cache`` sees it."""

    name: str
    key: str
    path: Path
    bytes: int
    built_at: float  # when it was built (its stage.json's modification time)


def stored_stages(root: str | Path) -> list[StoredStage]:
    """Every finished stage under ``root``, by stage name then key."""
    out = []
    for stage_dir in sorted(d for d in Path(root).iterdir() if d.is_dir() and not d.name.startswith(".")):
        for folder in sorted(d for d in stage_dir.iterdir() if d.is_dir() and (d / META).is_file()):
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            out.append(StoredStage(stage_dir.name, folder.name, folder, size, (folder / META).stat().st_mtime))
    return out


def prune(root: str | Path, names: tuple[str, ...] = (), older_than_days: float | None = None,
          dry_run: bool = False) -> list[StoredStage]:
    """Delete the finished stages of the given stage names (all if none) built more than
    ``older_than_days`` ago (any age if None); return what was (or would be) deleted.

    Raises ``CacheError`` naming the grids that use the cache if any runs: a grid loads
    stages without a lock, so deleting one under it would fail its cells. A deleted
    stage is rebuilt by the next grid that needs it."""
    root = Path(root)
    if not root.is_dir():
        raise CacheError(f"no stage cache at {root}; pass --cache the folder a grid used")
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    with FileLock(str(root / PRUNE_LOCK)):
        users = _users(root)
        if users and not dry_run:
            raise CacheError(f"stage cache {root} is in use by a running grid ({', '.join(users)}); "
                             f"prune it when the grid is done")
        chosen = [s for s in stored_stages(root) if (not names or s.name in names)
                  and (cutoff is None or s.built_at < cutoff)]
        if dry_run:
            return chosen
        removed = []
        for stage in chosen:
            lock = Path(str(stage.path) + ".lock")
            try:
                with FileLock(str(lock), timeout=0):  # held: a worker is rebuilding it now
                    shutil.rmtree(stage.path)
                    removed.append(stage)
            except Timeout:
                continue
            lock.unlink(missing_ok=True)
        return removed


def _check_complete(folder: Path) -> None:
    """Raise ``CacheError`` if a finished stage lost files or bytes since it was built."""
    try:
        files = json.loads((folder / META).read_text()).get("files")
    except (OSError, ValueError) as exc:
        raise _corrupt(folder, f"{META} unreadable: {exc}") from None
    for rel, size in (files or {}).items():  # None: built before the list existed
        path = folder / rel
        actual = path.stat().st_size if path.is_file() else None
        if actual != size:
            found = "missing" if actual is None else f"{actual} bytes"
            raise _corrupt(folder, f"{rel}: {found}, built with {size} bytes")


def _corrupt(folder: Path, problem: str) -> CacheError:
    return CacheError(f"stage folder {folder} is truncated or corrupt ({problem}): "
                     f"delete it (rm -r {folder}) and re-run to rebuild it")


def _sync_tree(folder: Path) -> dict[str, int]:
    """fsync every file and subfolder under ``folder``; return ``{relative path: size}``."""
    files = {}
    for dirpath, _dirs, names in os.walk(folder):
        for fname in names:
            path = Path(dirpath) / fname
            _fsync(path)
            files[path.relative_to(folder).as_posix()] = path.stat().st_size
        if Path(dirpath) != folder:
            _fsync(Path(dirpath))
    return files


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes its entries durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_disk_full(exc: BaseException | None) -> bool:
    """ENOSPC/EDQUOT anywhere in the chain: libraries (Arrow, safetensors) often wrap it
    in their own error keeping only the OS message, and SQLite says "disk is full"."""
    for _ in range(10):  # a chain is short; the bound guards against a cycle
        if exc is None:
            return False
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left" in str(exc) or "disk is full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
