"""The node's privacy ledger: the clip database's ``privacy_ledger`` table, its one owner.

One row per DP fine-tune (``adaptation.privacy``): the night it counts for, what the accountant
needs to compose it (:class:`vfer.privacy.accountant.NightSpend`), and the window's composed
epsilon with it (``spent_after``), computed once by the night that wrote it. The adaptation child
reads the ledger into a :class:`~vfer.privacy.accountant.PrivacyBudget` and appends to it; the
capture process (``/metrics``, the kiosk notice) reads only the newest row (:func:`latest`), so a
scrape never runs the accountant. Between nights that reading is an upper bound: a night that has
left the window still counts until the next DP night recomputes the window.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge_node.state import Notice
from edge_node.store import ClipStore
from vfer.messages import NodePrivacy
from vfer.privacy.accountant import NightPlan, PrivacyBudget
from vfer.privacy.options import PrivacyOptions

if TYPE_CHECKING:
    from edge_node.config import NodeConfig

#: Rows older than this many nights are dropped: no window is longer (PrivacyOptions' bound).
KEEP_NIGHTS = 366


def night_number(night: str) -> int:
    """The accountant's night number of a night key (``YYYY-MM-DD``, :func:`schedule.night_of`)."""
    return date.fromisoformat(night).toordinal()


def load_budget(store: ClipStore, options: PrivacyOptions) -> PrivacyBudget:
    """The ledger as a budget under today's ``options`` (a bad row raises PrivacyError)."""
    rows = store.db.execute("SELECT spend FROM privacy_ledger ORDER BY night, id").fetchall()
    return PrivacyBudget.from_records(options, [json.loads(r[0]) for r in rows])


def record_night(
    store: ClipStore, budget: PrivacyBudget, night: int, plan: NightPlan
) -> tuple[PrivacyBudget, float]:
    """Count tonight's fine-tune (``budget.record`` refuses one that overspends), keep it, and
    return the budget with it and the window's composed epsilon."""
    after = budget.record(night, plan)
    spent = after.spent(night)
    spend = asdict(plan.spend(night))
    with store.db.atomic():
        store.db.execute(
            "INSERT INTO privacy_ledger (night, recorded_at, spend, spent_after, epsilon_window) "
            "VALUES (?, ?, ?, ?, ?)",
            [night, time.time(), json.dumps(spend), spent, budget.options.epsilon_window],
        )
        store.db.execute("DELETE FROM privacy_ledger WHERE night < ?", [night - KEEP_NIGHTS])
    return after, spent


@dataclass(frozen=True)
class LedgerView:
    """What people and operators are shown: the window as of the newest DP night."""

    epsilon_per_night: float
    epsilon_window: float
    window_nights: int
    delta: float
    spent: float  # composed over the window, as of ``last_night`` (0: none in the window)
    last_night: int | None  # the newest DP night's number, None: none yet

    @property
    def left(self) -> float:
        return max(0.0, self.epsilon_window - self.spent)


def latest(db_path: Path, options: PrivacyOptions, tonight: int) -> LedgerView:
    """The window's spent epsilon from the newest row, read-only (no accountant run: cheap for a
    scrape); a database without a ledger yet reads as nothing spent."""
    row = None
    if db_path.is_file():
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0)
        try:
            row = con.execute(
                "SELECT night, spent_after FROM privacy_ledger ORDER BY night DESC, id DESC LIMIT 1"
            ).fetchone()
        except sqlite3.OperationalError:  # no such table: a database from before the ledger
            row = None
        finally:
            con.close()
    night = None if row is None else int(row[0])
    in_window = night is not None and night > tonight - options.window_nights
    spent = float(row[1]) if row is not None and in_window else 0.0
    o = options
    return LedgerView(o.epsilon_per_night, o.epsilon_window, o.window_nights, o.delta, spent, night)


def notice_text(view: LedgerView) -> str:
    """The kiosk's sentence about epsilon, in plain words."""
    return (
        "Overnight, this kiosk tunes its model to the faces it saw, with differential privacy: "
        f"one night may reveal at most epsilon = {view.epsilon_per_night:g} about one visit, and "
        f"all nights together at most {view.epsilon_window:g} over {view.window_nights} nights "
        f"(delta {view.delta:g}; smaller is more private). Spent so far: "
        f"{view.spent:.2f} of {view.epsilon_window:g}; when it is spent, the kiosk stops learning "
        "until older nights leave the window."
    )


def view_now(db_path: Path, options: PrivacyOptions, window_start: str) -> LedgerView:
    """:func:`latest` for the night it is now (the nightly window's night key)."""
    from edge_node.schedule import night_of

    return latest(db_path, options, night_number(night_of(datetime.now(), window_start)))


def kiosk_notice(config: NodeConfig) -> Notice:
    """The kiosk's notice: the operator's text and name, and the epsilon sentence when private."""
    d, a = config.deployment, config.adaptation
    view = view_now(Path(config.db), a.privacy, a.window_start) if a.privacy.enabled else None
    return Notice(d.notice, d.operator, None if view is None else notice_text(view))


def status_privacy(config: NodeConfig) -> NodePrivacy | None:
    """The status message's epsilon (the fleet page shows it per node); None without DP."""
    a = config.adaptation
    if not a.privacy.enabled:
        return None
    v = view_now(Path(config.db), a.privacy, a.window_start)
    return NodePrivacy(
        epsilon_spent=v.spent,
        epsilon_left=v.left,
        epsilon_window=v.epsilon_window,
        window_nights=v.window_nights,
        delta=v.delta,
    )
