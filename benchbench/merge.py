"""Submissions: entries from someone else's board, added to ours without re-running them.

A submission is a leaderboard JSON produced by ``benchbench leaderboard`` elsewhere. It
is accepted only if it validates on its own and against our board (same track,
protocol and data sets, same metric definitions, see ``validate_board``) and adds no
entry we already have. Its entries keep their provenance (who ran them, which code,
which plugin versions) and are marked ``"source": "submitted"`` so every view can tell
them from what this board measured.

Regenerating a board from the store (``benchbench leaderboard``) keeps the submitted
entries of the board it replaces (``carry_submissions``); a re-measured entry replaces
a submitted one with the same key.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from benchbench.errors import ConfigError
from benchbench.leaderboard import KEY_COLUMNS, Board, validate_board

SUBMITTED = "submitted"


def _key(entry: dict[str, Any]) -> tuple:
    return tuple(entry[k] for k in KEY_COLUMNS)


def check_submission(board: dict[str, Any], submission: dict[str, Any]) -> list[str]:
    """Why ``submission`` cannot be merged into ``board``, one line per problem; ``[]`` if it can."""
    problems = validate_board(submission, against=board)
    if problems:
        return problems
    ours = {_key(e) for e in board["entries"]}
    return [f"entries/{i}: {dict(zip(KEY_COLUMNS[3:], _key(e)[3:]))} is already on the board "
            f"(remove it from the submission)"
            for i, e in enumerate(submission["entries"]) if _key(e) in ours]


def merge_submission(board: dict[str, Any], submission: dict[str, Any]) -> dict[str, Any]:
    """``board`` plus the submission's entries, marked submitted; raises if ``check_submission`` fails."""
    problems = check_submission(board, submission)
    if problems:
        raise ConfigError(f"submission rejected ({len(problems)} problems, first: {problems[0]})")
    added = [{**e, "source": SUBMITTED} for e in submission["entries"]]
    metrics = {**submission.get("metrics", {}), **board.get("metrics", {})}  # ours win: same definitions
    return {**board, "metrics": metrics, "entries": [*board["entries"], *added]}


def carry_submissions(board: Board, previous: dict[str, Any]) -> tuple[Board, list[str]]:
    """``board`` (fresh from the store) plus the submitted entries of the board it replaces.

    Returns the board and one line per submitted entry that could not be kept (the
    previous board is invalid or of another protocol, or the entry was re-measured).
    """
    submitted = [e for e in previous.get("entries", []) if isinstance(e, dict) and e.get("source") == SUBMITTED]
    if not submitted:
        return board, []
    problems = validate_board(previous)
    if problems or (previous["protocol"], previous["preset"]) != (board.protocol, board.preset):
        why = problems[0] if problems else (f"its protocol and preset {previous['protocol']} {previous['preset']} "
                                            f"are not {board.protocol} {board.preset}")
        return board, [f"dropped {len(submitted)} submitted entries of the previous board: {why}"]
    measured = {tuple(k) for k in board.entries[KEY_COLUMNS].itertuples(index=False)}
    kept = [e for e in submitted if _key(e) not in measured]
    notes = [f"re-measured here, replaces a submitted entry: {dict(zip(KEY_COLUMNS[3:], _key(e)[3:]))}"
             for e in submitted if _key(e) in measured]
    entries = pd.concat([board.entries, pd.DataFrame(kept)], ignore_index=True) if kept else board.entries
    return Board(board.track, board.protocol, entries, {**previous.get("metrics", {}), **board.metrics},
                 board.preset), notes
