"""SQLite result store: one row per cell, committed the moment the cell finishes.

WAL mode and one transaction per finished cell mean a killed grid loses at most the
cell that was running; re-running the grid skips every cell whose key is stored as
``ok``. Only the driver process writes (workers return plain results), so there is no
write contention even on a cluster. Everything is JSON or plain columns: results are
data that others can read without running our code. Metrics are finite numbers (NaN
would become NULL, and JSON has no inf). A grid claims its cells before running them
(table ``claims``), so two grids on one store split the work instead of doubling it.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from benchbench.cells import CellSpec
from benchbench.errors import DataError, check_finite

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    config_path TEXT, config_hash TEXT, config_json TEXT,
    preset TEXT, git_commit TEXT, host TEXT, versions_json TEXT, argv TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    run_id INTEGER REFERENCES runs(run_id),
    track TEXT NOT NULL, task TEXT NOT NULL, dataset TEXT, model TEXT,
    attack TEXT NOT NULL, defense TEXT NOT NULL, seed INTEGER NOT NULL, preset TEXT,
    spec_json TEXT NOT NULL, components_json TEXT, stages_json TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT, traceback TEXT, wall_seconds REAL, finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    cell_key TEXT NOT NULL REFERENCES cells(key) ON DELETE CASCADE,
    evaluator TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL,
    higher_is_better INTEGER NOT NULL, formula_version TEXT NOT NULL,
    PRIMARY KEY (cell_key, evaluator, metric)
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    host TEXT NOT NULL, pid INTEGER NOT NULL, claimed_at REAL NOT NULL
);
"""
# A claim older than this is taken over even if its owner looks alive (a hung driver, or
# a reused pid). Owners refresh their claims whenever one of their cells finishes, so
# only a grid with no cell finishing for this long loses its claims.
CLAIM_TIMEOUT_SECONDS = 24 * 3600
_INF = 9e999  # SQLite has no inf literal; this one overflows to it


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit of the code that produced a result (+ '-dirty' if uncommitted)."""
    try:
        here = cwd or Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise DataError(f"--store {self.path} is a directory; give a file path such as "
                            f"{self.path / 'results.sqlite'}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"--store {self.path}: cannot create its folder ({exc.strerror}); "
                            f"give a path in a writable directory") from None
        self.db = sqlite3.connect(self.path, timeout=30)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:  # before anything is written: the file is untouched
            self.db.close()
            raise DataError(f"--store {self.path} is not a benchbench results store ({exc}); "
                            f"pass a new path, or the .sqlite file a grid wrote") from None

    @classmethod
    def read_only(cls, path: str | Path) -> "Store":
        """Open an existing store without writing to it, not even its schema
        (`benchbench show`, `grid --dry-run`): inspecting a store never changes it."""
        store = cls.__new__(cls)
        store.path = Path(path)
        if not store.path.is_file():
            raise DataError(f"no results store at {store.path}; run `benchbench grid CONFIG --store "
                            f"{store.path}` first, or pass the .sqlite file a grid wrote")
        store.db = sqlite3.connect(store.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
        try:
            store.db.execute("SELECT key, status FROM cells LIMIT 1").fetchall()
            store.db.execute("SELECT key FROM claims LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            store.db.close()
            raise DataError(f"{store.path} is not a benchbench results store ({exc}); pass the "
                            f".sqlite file a grid wrote") from None
        return store

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start_run(self, config_path: str, config_hash: str, config: dict[str, Any], preset: str,
                  versions: dict[str, str], argv: list[str] | None = None) -> int:
        with self.db:
            cur = self.db.execute(
                "INSERT INTO runs (started_at, config_path, config_hash, config_json, preset,"
                " git_commit, host, versions_json, argv) VALUES (?,?,?,?,?,?,?,?,?)",
                (time.time(), config_path, config_hash, json.dumps(config), preset, git_commit(),
                 f"{socket.gethostname()} ({platform.platform()}, {os.cpu_count()} cpus)",
                 json.dumps(versions), json.dumps(argv or [])),
            )
        return int(cur.lastrowid)

    def finished_keys(self) -> set[str]:
        """Keys of ok cells; a cell an older version stored with an inf metric is not
        finished (it would break the JSON leaderboard) and runs again."""
        return {k for (k,) in self.db.execute(
            "SELECT key FROM cells WHERE status = 'ok' AND key NOT IN"
            " (SELECT cell_key FROM metrics WHERE abs(value) >= ?)", (_INF,))}

    def record(self, run_id: int, key: str, spec: CellSpec, result: dict[str, Any]) -> None:
        """Store one cell's result (replacing an earlier failed attempt) in one transaction,
        release its claim and refresh this grid's other claims.

        Raises ``NonFiniteMetric`` before writing anything if a metric is NaN or inf: SQLite
        would store NaN as NULL and inf breaks the JSON leaderboard."""
        status = result["status"]
        metrics = [(key, ev, metric, check_finite(ev, metric, m["value"]), int(m["higher_is_better"]),
                    m["formula_version"])
                   for ev, values in result.get("metrics", {}).items() for metric, m in values.items()]
        with self.db:
            self.db.execute("DELETE FROM cells WHERE key = ?", (key,))
            self.db.execute(
                "INSERT INTO cells (key, run_id, track, task, dataset, model, attack, defense, seed,"
                " preset, spec_json, components_json, stages_json, status, error, traceback,"
                " wall_seconds, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, run_id, spec.track, spec.task.name, result.get("dataset"), result.get("model"),
                 spec.attack.name, spec.defense.name, spec.seed, spec.preset,
                 json.dumps(spec.to_dict()), json.dumps(result.get("components", {})),
                 json.dumps(result.get("stages", {})), status, result.get("error"),
                 result.get("traceback"), result.get("wall_seconds"), time.time()),
            )
            self.db.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?)", metrics)
            self.db.execute("DELETE FROM claims WHERE key = ?", (key,))
            self.db.execute("UPDATE claims SET claimed_at = ? WHERE host = ? AND pid = ?",
                            (time.time(), *_owner()))

    def claim(self, keys: list[str]) -> tuple[list[str], dict[str, str]]:
        """Claim the cells this grid is about to run, so that a second grid on the same
        store does not evaluate them again.

        Returns the claimed keys and ``{key: owner}`` for cells that a live other grid
        holds. A key whose cell is finished by now is in neither. A claim is taken over
        if it is this process's own, its owner is a dead process on this host, or it is
        older than ``CLAIM_TIMEOUT_SECONDS``."""
        me, now = _owner(), time.time()
        self.db.execute("BEGIN IMMEDIATE")  # read and write the claims as one step
        try:
            held = {k: (h, p, t) for k, h, p, t in
                    self.db.execute("SELECT key, host, pid, claimed_at FROM claims")}
            done = self.finished_keys()
            claimed, busy = [], {}
            for key in (k for k in keys if k not in done):
                owner = held.get(key)
                if owner and _holds(*owner, now=now):
                    busy[key] = f"pid {owner[1]} on {owner[0]}"
                else:
                    claimed.append(key)
            self.db.executemany("INSERT OR REPLACE INTO claims VALUES (?,?,?,?)",
                                [(k, *me, now) for k in claimed])
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise
        return claimed, busy

    def release_claims(self) -> None:
        """Drop this process's claims on cells it did not finish (interrupted, or failed)."""
        with self.db:
            self.db.execute("DELETE FROM claims WHERE host = ? AND pid = ?", _owner())

    def failures(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT key, track, attack, defense, seed, error FROM cells"
                               " WHERE status = 'failed' ORDER BY finished_at")
        cols = ["key", "track", "attack", "defense", "seed", "error"]
        return [dict(zip(cols, r)) for r in rows]

    def statuses(self) -> dict[str, str]:
        """``{cell key: "ok" | "failed"}`` of every stored cell; ok cells that count as not
        finished (``finished_keys``) are "failed": a re-run runs them again."""
        done = self.finished_keys()
        return {k: ("ok" if k in done else "failed") for (k,) in self.db.execute("SELECT key FROM cells")}

    def claim_owners(self) -> dict[str, str]:
        """``{cell key: "pid P on HOST"}`` of the cells that a live grid holds now."""
        now = time.time()
        return {k: f"pid {p} on {h}" for k, h, p, t in
                self.db.execute("SELECT key, host, pid, claimed_at FROM claims")
                if (h, p) != _owner() and _holds(h, p, t, now=now)}

    def cell(self, key: str) -> dict[str, Any] | None:
        with closing(self.db.execute("SELECT * FROM cells WHERE key = ?", (key,))) as cur:
            row = cur.fetchone()
            return dict(zip([d[0] for d in cur.description], row)) if row else None

    def long_table(self) -> pd.DataFrame:
        """One row per (ok cell, metric), joined with the cell's component versions and
        its run's provenance: the input of every leaderboard."""
        query = """
            SELECT c.key AS cell_key, c.track, c.task, c.dataset, c.model, c.defense, c.attack,
                   c.seed, c.preset, m.evaluator, m.metric, m.value, m.higher_is_better,
                   m.formula_version, c.components_json, c.wall_seconds,
                   r.git_commit, r.host, r.versions_json, r.config_hash, c.finished_at
            FROM metrics m JOIN cells c ON c.key = m.cell_key JOIN runs r ON r.run_id = c.run_id
            WHERE c.status = 'ok'
        """
        return pd.read_sql_query(query, self.db)

    def iter_cells(self) -> Iterator[dict[str, Any]]:
        with closing(self.db.execute("SELECT * FROM cells ORDER BY finished_at")) as cur:
            cols = [d[0] for d in cur.description]
            for row in cur:
                yield dict(zip(cols, row))


def _owner() -> tuple[str, int]:
    """Who holds a claim: this host and process."""
    return socket.gethostname(), os.getpid()


def _holds(host: str, pid: int, claimed_at: float, now: float) -> bool:
    """Whether an existing claim still stands against this process."""
    if (host, pid) == _owner() or now - claimed_at > CLAIM_TIMEOUT_SECONDS:
        return False
    if host != socket.gethostname():
        return True  # cannot see that host's processes: trust the claim until it times out
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True
