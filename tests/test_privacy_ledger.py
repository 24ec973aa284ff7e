"""The node's privacy ledger in a real clip database: what it keeps, and what /metrics, the
status and the kiosk read back from it without running the accountant."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from edge_node.migrations import migrate
from edge_node.personalization.ledger import (
    KEEP_NIGHTS,
    latest,
    load_budget,
    night_number,
    notice_text,
    record_night,
)
from edge_node.store import ClipStore
from vfer.privacy.accountant import PrivacyBudget, plan_night
from vfer.privacy.options import PrivacyError, PrivacyOptions

OPTIONS = PrivacyOptions(enabled=True, epsilon_per_night=1.0, epsilon_window=5.0, window_nights=30)


def test_nights_are_kept_composed_and_read_back(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    plan = plan_night(OPTIONS, visits=40, batch_size=8, epochs=2)
    first = night_number("2026-12-01")
    assert night_number("2026-12-02") == first + 1
    with ClipStore(db) as store:
        _, spent1 = record_night(store, load_budget(store, OPTIONS), first, plan)
        after, spent2 = record_night(store, load_budget(store, OPTIONS), first + 1, plan)
        budget = load_budget(store, OPTIONS)
    assert [s.night for s in budget.spends] == [first, first + 1] and after.may_submit(first + 1)
    assert spent1 == pytest.approx(plan.epsilon) and spent1 < spent2 <= 2 * plan.epsilon
    assert spent2 == pytest.approx(PrivacyBudget(OPTIONS, budget.spends).spent(first + 1))
    view = latest(db, OPTIONS, first + 1)
    assert (view.spent, view.left, view.last_night) == (spent2, 5.0 - spent2, first + 1)
    assert latest(db, OPTIONS, first + 1 + 30).spent == 0.0  # the newest night left the window
    text = notice_text(view)
    assert "at most epsilon = 1 about one visit" in text and "at most 5 over 30 nights" in text
    assert f"Spent so far: {spent2:.2f} of 5" in text


def test_an_overspending_night_is_refused_and_old_rows_are_dropped(tmp_path: Path) -> None:
    tight = OPTIONS.model_copy(update={"epsilon_window": 1.0})
    plan = plan_night(tight, visits=40, batch_size=8, epochs=2)
    with ClipStore(tmp_path / "node.db") as store:
        record_night(store, load_budget(store, tight), 1000, plan)
        with pytest.raises(PrivacyError, match="does not fit the window"):
            record_night(store, load_budget(store, tight), 1001, plan)
        record_night(store, load_budget(store, tight), 1000 + KEEP_NIGHTS + 1, plan)
        assert [s.night for s in load_budget(store, tight).spends] == [1000 + KEEP_NIGHTS + 1]


def test_no_ledger_reads_as_nothing_spent(tmp_path: Path) -> None:
    assert latest(tmp_path / "missing.db", OPTIONS, 1).spent == 0.0
    old = tmp_path / "v4.db"
    conn = sqlite3.connect(old)
    migrate(sqlite_utils.Database(conn), old, target=4)  # a node from before the ledger
    conn.close()
    view = latest(old, OPTIONS, 1)
    assert (view.spent, view.left, view.last_night) == (0.0, 5.0, None)
