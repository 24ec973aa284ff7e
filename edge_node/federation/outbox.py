"""The node's persistent outbox (SQLite via sqlite-utils, WAL): updates stay until acknowledged.

An update is written here before it is published, so a reboot, a broker restart or a lost
connection never loses it: :meth:`Outbox.due` lists what must be (re)sent, an ack from the
aggregator marks it done. A newer update for the same round supersedes older pending ones.
Thread-safe: one connection guarded by a lock.

The same SQLite file holds one more table, owned by :class:`ReceivedCentral`: the newest
verified central frame the node has *received* (not necessarily installed: the bundle home's
``installed.json`` says what is installed), so a restarted node knows it without the broker.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vfer.sqlite_schema import Migration, SchemaError, migrate, open_wal

log = logging.getLogger(__name__)

_SCHEMA_1 = [
    "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, update_id TEXT UNIQUE NOT NULL, "
    "round_id INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB, created_at REAL NOT NULL, "
    "sent_count INTEGER NOT NULL DEFAULT 0, last_sent REAL, status TEXT NOT NULL DEFAULT 'pending', "
    "reason TEXT, done_at REAL)",
    "CREATE INDEX outbox_status ON outbox(status)",
    "CREATE TABLE central (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL, "
    "frame BLOB NOT NULL, installed_at REAL NOT NULL)",
]


MIGRATIONS: list[Migration] = [";\n".join(_SCHEMA_1) + ";"]

#: An outbox database this version cannot use (the one schema error of every store).
OutboxError = SchemaError


@dataclass(frozen=True)
class Pending:
    seq: int
    update_id: str
    round_id: int
    topic: str
    payload: bytes


class _OutboxFile:
    """The federation client's SQLite file (outbox.db), opened once per owner of a table in it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        self._lock = threading.Lock()
        self.db = open_wal(p, check_same_thread=False)
        migrate(self.db, p, MIGRATIONS, what="outbox", newer_hint="upgrade fedvfer")

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()


class Outbox(_OutboxFile):
    def next_seq(self) -> int:
        with self._lock:
            row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        return (int(row[0]) if row else 0) + 1

    def add(self, seq: int, update_id: str, round_id: int, topic: str, payload: bytes) -> None:
        """Store an update (durably) and supersede older pending ones of the same round."""
        with self._lock:
            c = self.db.conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute(
                    "UPDATE outbox SET status='superseded', payload=NULL, done_at=? "
                    "WHERE round_id=? AND status='pending'",
                    [time.time(), round_id],
                )
                c.execute(
                    "INSERT INTO outbox (seq, update_id, round_id, topic, payload, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [seq, update_id, round_id, topic, payload, time.time()],
                )
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def due(self, older_than_s: float) -> list[Pending]:
        """Pending updates never sent, or last sent more than ``older_than_s`` ago."""
        limit = time.time() - older_than_s
        with self._lock:
            rows = self.db.execute(
                "SELECT seq, update_id, round_id, topic, payload FROM outbox WHERE status='pending' "
                "AND (last_sent IS NULL OR last_sent <= ?) ORDER BY seq",
                [limit],
            ).fetchall()
        return [Pending(int(r[0]), r[1], int(r[2]), r[3], bytes(r[4])) for r in rows]

    def mark_sent(self, update_id: str) -> None:
        with self._lock:
            self.db.execute(
                "UPDATE outbox SET sent_count=sent_count+1, last_sent=? WHERE update_id=?",
                [time.time(), update_id],
            )

    def mark_done(self, update_id: str, status: str, reason: str | None) -> bool:
        """Record the aggregator's answer; True when it settled a pending update."""
        with self._lock:
            cur = self.db.execute(
                "UPDATE outbox SET status=?, reason=?, payload=NULL, done_at=? "
                "WHERE update_id=? AND status='pending'",
                [status, reason, time.time(), update_id],
            )
            return cur.rowcount > 0

    def status(self, update_id: str) -> tuple[str, str | None] | None:
        with self._lock:
            row = self.db.execute(
                "SELECT status, reason FROM outbox WHERE update_id=?", [update_id]
            ).fetchone()
        return (row[0], row[1]) if row else None

    def pending_count(self) -> int:
        with self._lock:
            return int(
                self.db.execute("SELECT count(*) FROM outbox WHERE status='pending'").fetchone()[0]
            )


def default_outbox(db: Path) -> Path:
    """Where the node keeps its outbox: beside its clip database."""
    return db.with_name(f"{db.stem}.outbox.sqlite")


def pending_in(path: str | os.PathLike[str]) -> int:
    """Updates still waiting for an answer in the outbox file at ``path``, read-only (0 when
    there is none yet or it cannot be read): what ``/metrics`` reports, without opening it for
    writing or migrating it from another process."""
    p = Path(path)
    if not p.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=2.0)
        try:
            row = con.execute("SELECT count(*) FROM outbox WHERE status='pending'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0
    return int(row[0])


class ReceivedCentral(_OutboxFile):
    """The ``central`` table: the newest verified central frame received (one row).

    Only the federation client writes it, when a central verifies. What is *installed* is the
    bundle home's business (:meth:`edge_node.bundles.BundleHome.central_version`).
    """

    def save(self, version: int, frame: bytes) -> None:
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO central (id, version, frame, installed_at) VALUES (1, ?, ?, ?)",
                [version, frame, time.time()],
            )

    def load(self) -> tuple[int, bytes] | None:
        with self._lock:
            row = self.db.execute("SELECT version, frame FROM central WHERE id=1").fetchone()
        return (int(row[0]), bytes(row[1])) if row else None
