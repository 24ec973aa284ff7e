"""BundleHome's federation progress: rounds and the night done, and an older node's memo file."""

from __future__ import annotations

import json
from pathlib import Path

from edge_node.bundles import ROUNDS_REMEMBERED, BundleHome, HomeState


def test_rounds_and_night_survive_a_new_home_object(tmp_path: Path) -> None:
    home = BundleHome(tmp_path / "bundle")
    for r in range(1, ROUNDS_REMEMBERED + 6):
        home.mark_round_done(r)
    home.mark_night_done("2026-12-01")
    again = BundleHome(tmp_path / "bundle")
    assert again.rounds_done() == list(range(6, ROUNDS_REMEMBERED + 6))
    assert again.night_done() == "2026-12-01" and again.central_version() == 0


def test_an_older_nodes_memo_is_folded_in_once(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    legacy = tmp_path / "node.db.personalizer.json"
    legacy.write_text(json.dumps({"rounds_done": [3, 4, "x"], "night_done": "2026-11-30"}))
    home = BundleHome(tmp_path / "bundle")
    home.mark_round_done(5)
    home.mark_night_done("2026-11-29")
    assert home.adopt_legacy_memo(db)
    assert home.rounds_done() == [3, 4, 5] and home.night_done() == "2026-11-30"
    assert not legacy.exists() and (tmp_path / "node.db.personalizer.json.migrated").is_file()
    assert not home.adopt_legacy_memo(db)  # once


def test_state_ignores_unknown_keys_and_fills_defaults() -> None:
    st = HomeState.from_json({"active": "a", "future_key": 1})
    assert st.active == "a" and st.rounds_done == [] and st.verified == {}
