"""The aggregator state database's schema: numbered migrations, each in its own transaction.

Opened through :mod:`vfer.sqlite_schema` (WAL, a backup copy before an existing database is
migrated, a database written by a newer version refused). Tables: ``centrals`` (every signed
central frame, exactly as published), ``rounds`` (the leader's rounds), ``accepted`` (the
leader's view: which worker holds which (node, seq), the updates that count; also the answer
table), ``updates`` (a worker's index of stored bodies: one row per node, seq and round; the
bodies live in append-only files, :mod:`broker_aggregator.payloads`), ``rejections`` (counts
per round and reason) and ``poison`` (messages whose handling raised). Schema 1 kept the bodies
in a ``submissions`` table; migration 2 moves them into the files; migration 3 adds ``poison``
and each counted update's FedAvg factor; migration 4 the secure rounds' ``secagg_rounds`` and
``secagg_groups``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from broker_aggregator.payloads import PayloadFiles
from vfer.sqlite_schema import SchemaError, migrate, open_wal

#: A state database this version cannot use (the one schema error of every store).
StateError = SchemaError


_SCHEMA_1 = [
    "CREATE TABLE centrals (version INTEGER PRIMARY KEY, round_id INTEGER, created_at REAL, "
    "num_submissions INTEGER, frame BLOB NOT NULL)",
    "CREATE TABLE rounds (round_id INTEGER PRIMARY KEY, base_version INTEGER, state TEXT, "
    "opened_at REAL, deadline REAL, closed_at REAL, result_version INTEGER, "
    "num_submissions INTEGER, extensions INTEGER DEFAULT 0)",
    "CREATE TABLE accepted (round_id INTEGER, node_id TEXT, worker_id TEXT, seq INTEGER, "
    "PRIMARY KEY (round_id, node_id))",
    "CREATE TABLE submissions (round_id INTEGER, node_id TEXT, seq INTEGER, update_id TEXT, "
    "factor REAL, received_at REAL, dtype TEXT, body BLOB, PRIMARY KEY (round_id, node_id))",
    "CREATE TABLE rejections (round_id INTEGER, reason TEXT, count INTEGER, "
    "PRIMARY KEY (round_id, reason))",
]


def _m1(db: sqlite_utils.Database, path: Path) -> None:
    for sql in _SCHEMA_1:
        db.conn.execute(sql)


def _m2(db: sqlite_utils.Database, path: Path) -> None:
    """Bodies move from SQLite BLOBs into append-only files; one index row per (node, seq)."""
    c = db.conn
    c.execute(
        "CREATE TABLE updates (round_id INTEGER, node_id TEXT, seq INTEGER, update_id TEXT, "
        "factor REAL, received_at REAL, dtype TEXT, offset INTEGER, length INTEGER, "
        "PRIMARY KEY (round_id, node_id, seq))"
    )
    c.execute("ALTER TABLE accepted ADD COLUMN update_id TEXT")
    files = PayloadFiles(payload_dir(path))
    rows = c.execute(
        "SELECT round_id, node_id, seq, update_id, factor, received_at, dtype, body "
        "FROM submissions ORDER BY round_id, node_id"
    )
    for r in rows:
        offset, length = files.append(int(r[0]), bytes(r[7]))
        c.execute(
            "INSERT INTO updates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [*r[:7], offset, length]
        )
    files.sync()
    files.close()
    c.execute("DROP TABLE submissions")


def _m3(db: sqlite_utils.Database, path: Path) -> None:
    """The poison table (messages whose handling raised); each counted update's FedAvg factor."""
    db.conn.execute(
        "CREATE TABLE poison (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL, "
        "topic TEXT, node_id TEXT, update_id TEXT, reason TEXT, detail TEXT)"
    )
    db.conn.execute("CREATE INDEX poison_update ON poison(node_id, update_id)")
    db.conn.execute("ALTER TABLE accepted ADD COLUMN factor REAL")


def _m4(db: sqlite_utils.Database, path: Path) -> None:
    """Secure aggregation: each secure round's committed seed, joiners and groups; each group's
    serialized :class:`vfer.secagg.GroupAggregator` state (masked sums, never one update)."""
    db.conn.execute(
        "CREATE TABLE secagg_rounds (round_id INTEGER PRIMARY KEY, seed BLOB NOT NULL, "
        "joined TEXT NOT NULL DEFAULT '[]', groups TEXT)"
    )
    db.conn.execute(
        "CREATE TABLE secagg_groups (round_id INTEGER, group_id INTEGER, stage TEXT, "
        "state BLOB NOT NULL, PRIMARY KEY (round_id, group_id))"
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database, Path], None]] = [_m1, _m2, _m3, _m4]


def payload_dir(db_path: Path) -> Path:
    return db_path.with_name(f"{db_path.name}.payloads")


def open_db(path: str | os.PathLike[str], *, fsync: bool = False) -> sqlite_utils.Database:
    """Open (create, migrate) the state database in WAL mode.

    ``synchronous=NORMAL`` in WAL mode: a commit survives a crash of the process (kill -9), a
    power loss may take the last commits with it; ``fsync=True`` makes it ``FULL``.
    """
    p = Path(path)
    db = open_wal(p, fsync=fsync)
    migrate(
        db, p, MIGRATIONS, what="state db", newer_hint="upgrade fedvfer or use another state_db"
    )
    return db
