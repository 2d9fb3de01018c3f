"""The board says how a test-time defense was attacked: its row label carries the
attacker gradient the runner stored with the cell."""
from __future__ import annotations

import json

from benchbench.grid import run_grid
from benchbench.leaderboard import build_boards
from benchbench.store import Store


def test_the_row_label_names_the_attacker_gradient(toy_registry, toy_config, tmp_path):
    store = tmp_path / "r.sqlite"
    run_grid(toy_config, store, tmp_path / "cache", registry=toy_registry, progress=False)
    with Store(store) as s:  # as the runner stores a purifier's cells
        for key, comps in s.db.execute("select key, components_json from cells").fetchall():
            comps = json.loads(comps)
            if comps["defense"]["name"] != "none":
                comps["defense"]["attacker_gradient"] = "bpda"
            s.db.execute("update cells set components_json = ? where key = ?", (json.dumps(comps), key))
        s.db.commit()
    (board,) = build_boards(store)
    labels = set(board.entries.defense)
    assert "none" in labels and any(label.endswith(" [attacker: bpda]") for label in labels)
    assert not any(label.startswith("none ") for label in labels)
