"""The node's record of its personalizations: the clip database's ``adaptations`` table.

One row per adaptation that ran (whoever started it: the node's loop or the nightly timer), as
the child's typed :class:`~edge_node.personalization.protocol.AdaptReport` (its protocol version
inside), gate verdict included. It survives restarts; the kiosk's and ``/metrics``' counters are
this process's own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge_node.personalization.protocol import AdaptReport, parse_report
from edge_node.store import ClipStore

#: Rows kept: the newest ones (an adaptation a night is about three years).
KEEP = 1000


@dataclass(frozen=True)
class Recorded:
    id: int
    finished_at: float
    report: AdaptReport


def record(store: ClipStore, report: AdaptReport, finished_at: float | None = None) -> int:
    """Keep ``report`` (without its weights file: that one is gone once read); returns its id."""
    kept = report.model_copy(update={"weights_file": None})
    at = time.time() if finished_at is None else finished_at
    with store.db.atomic():
        cur = store.db.execute(
            "INSERT INTO adaptations (finished_at, status, new_version, report) VALUES (?, ?, ?, ?)",
            [at, kept.status, kept.new_version, kept.model_dump_json()],
        )
        store.db.execute(
            "DELETE FROM adaptations WHERE id <= (SELECT max(id) FROM adaptations) - ?", [KEEP]
        )
    return int(cur.lastrowid or 0)


def history(store: ClipStore, limit: int = 50) -> list[Recorded]:
    """The newest ``limit`` adaptations, oldest first."""
    rows = store.db.execute(
        "SELECT id, finished_at, report FROM adaptations ORDER BY id DESC LIMIT ?", [limit]
    ).fetchall()
    return [
        Recorded(int(r[0]), float(r[1]), parse_report(r[2], f"adaptations row {r[0]}"))
        for r in reversed(rows)
    ]
