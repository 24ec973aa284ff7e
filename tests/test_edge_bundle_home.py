"""BundleHome's federation progress: rounds and the night done, and an older node's memo file."""

from __future__ import annotations

import json
from pathlib import Path

from edge_node.bundles import ROUNDS_REMEMBERED, BundleHome, Installed


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
    st = Installed.from_json({"active": "a", "future_key": 1})
    assert st.active == "a" and st.rounds_done == [] and st.verified == {}


def test_an_older_nodes_state_json_is_read_then_replaced_by_installed_json(
    tmp_path: Path,
) -> None:
    """``state.json`` was the file's name before "state" came to mean the kiosk's live state
    only: an upgraded node reads it and its next write moves it to ``installed.json``."""
    home = BundleHome(tmp_path / "bundle")
    home.versions.mkdir(parents=True)
    old = home.versions / "state.json"
    old.write_text(json.dumps({"central_version": 3, "rounds_done": [1, 2]}))
    assert home.central_version() == 3 and home.rounds_done() == [1, 2]
    home.mark_round_done(4)
    assert not old.exists() and home.installed_file.name == "installed.json"
    again = BundleHome(tmp_path / "bundle")
    assert again.central_version() == 3 and again.rounds_done() == [1, 2, 4]
