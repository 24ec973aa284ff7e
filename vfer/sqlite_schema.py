"""SQLite schemas as numbered migrations, the one way every store here opens its database.

The node's clip store, its federation outbox and the aggregator's state all keep their schema as
a list of migrations, counted by ``PRAGMA user_version``:

* the database runs in WAL mode with a busy timeout (``synchronous`` NORMAL, FULL on request);
* each migration runs in its own transaction together with its version bump, so a crash leaves the
  database at one version or the next, never between; the version is read again inside the write
  lock, so two processes opening a new file at once apply each migration once;
* before an existing database is migrated it is copied to ``<db>.bak-v<N>`` (SQLite's online
  backup);
* a database whose version is newer than the software's is refused with :class:`SchemaError`:
  older software must never write into it.

A migration is an SQL script (its statements run one by one inside the transaction, unlike
``executescript``, which commits first) or a callable that gets the open database and its path.
Never edit a migration that has shipped; add the next one.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import sqlite_utils

log = logging.getLogger(__name__)

Migration = str | Callable[[sqlite_utils.Database, Path], None]


class SchemaError(ValueError):
    """A database this software must not open; the message says what to do."""


def open_wal(
    path: str | Path, *, fsync: bool = False, check_same_thread: bool = True
) -> sqlite_utils.Database:
    """Open (create) ``path`` in WAL mode, autocommit (explicit BEGIN/COMMIT), busy timeout 10 s."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(p), isolation_level=None, check_same_thread=check_same_thread)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
    db.execute("PRAGMA busy_timeout=10000")
    return db


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def backup_path(db_path: Path, version: int) -> Path:
    return db_path.with_name(f"{db_path.name}.bak-v{version}")


def migrate(
    db: sqlite_utils.Database,
    db_path: Path | None,
    migrations: Sequence[Migration],
    *,
    what: str = "database",
    newer_hint: str = "upgrade fedvfer, or use another file",
    target: int | None = None,
) -> int:
    """Bring ``db`` to ``target`` (default: the last migration); returns the version it had."""
    latest = len(migrations)
    goal = latest if target is None else target
    current = schema_version(db)
    if current > latest:
        raise SchemaError(
            f"{db_path or what} has schema version {current}, newer than this software "
            f"understands ({latest}); {newer_hint}"
        )
    if current >= goal:
        return current
    if current > 0 and db_path is not None:
        dest = backup_path(db_path, current)
        out = sqlite3.connect(str(dest))
        try:
            db.conn.backup(out)
        finally:
            out.close()
        log.info("backed up %s (schema v%s) to %s before migrating", db_path, current, dest)
    conn = db.conn
    for number in range(current + 1, goal + 1):
        step = migrations[number - 1]
        conn.execute("BEGIN IMMEDIATE")
        if schema_version(db) >= number:  # another opener migrated while we waited for the lock
            conn.execute("COMMIT")
            continue
        try:
            if isinstance(step, str):
                for statement in _statements(step):
                    conn.execute(statement)
            else:
                step(db, db_path or Path(what))
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        log.info("migrated %s to schema v%s", db_path or what, number)
    return current


def _statements(script: str) -> list[str]:
    """Split an SQL script into whole statements (``sqlite3.complete_statement`` decides, so a
    ';' inside a string or a comment does not split)."""
    out: list[str] = []
    buf = ""
    for part in script.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if _code(buf):
                out.append(buf.strip())
            buf = ""
    tail = buf[:-1]  # the last part got a ';' it never had
    if _code(tail):
        out.append(tail.strip())
    return out


def _code(sql: str) -> bool:
    """True when ``sql`` holds more than blanks, ';' and ``--`` comments."""
    lines = (line.split("--", 1)[0] for line in sql.splitlines())
    return any(line.strip().strip(";").strip() for line in lines)
