"""The clip database's schema, as numbered migrations (``PRAGMA user_version`` counts them).

Each migration runs in its own transaction together with the version bump, so a crash leaves
the database at one version or the next, never between. Before an existing database is
migrated it is copied to ``<db>.bak-v<N>`` with SQLite's online backup. A database whose
version is newer than :data:`LATEST` is refused: older software must not write into it.

Never edit a migration that has shipped; add the next one.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import sqlite_utils

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: clips, their frames, and the class lists the clips were predicted with.
    """
    CREATE TABLE class_sets (
        id INTEGER PRIMARY KEY,
        names TEXT NOT NULL UNIQUE          -- JSON list, in the heads' output order
    );
    CREATE TABLE clips (
        id INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,           -- epoch seconds (wall clock when recorded)
        ended_at REAL NOT NULL,
        frame_count INTEGER NOT NULL,       -- T: frames with a face, one frames row each
        face_ratio REAL NOT NULL,           -- face frames / all frames between first and last
        bundle_id TEXT NOT NULL,            -- sha256 of the bundle's manifest.json
        class_set_id INTEGER NOT NULL REFERENCES class_sets(id),
        vfer_probs BLOB NOT NULL,           -- (K,) float32: v's step output after the last frame
        ifer_mean BLOB NOT NULL,            -- (K,) float32: mean of the per-frame g outputs
        embedding_dtype TEXT NOT NULL DEFAULT 'float16'
    );
    CREATE INDEX clips_started_at ON clips(started_at);
    CREATE TABLE frames (
        clip_id INTEGER NOT NULL REFERENCES clips(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,               -- 0..T-1
        t REAL NOT NULL,                    -- seconds since the clip's first frame (media time)
        embedding BLOB NOT NULL,            -- (1280,) in clips.embedding_dtype
        ifer BLOB NOT NULL,                 -- (K,) float32
        PRIMARY KEY (clip_id, idx)
    ) WITHOUT ROWID;
    """,
    # 2: opt-in face thumbnails, kept under their own retention.
    """
    CREATE TABLE thumbnails (
        id INTEGER PRIMARY KEY,
        clip_id INTEGER NOT NULL REFERENCES clips(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        jpeg BLOB NOT NULL
    );
    CREATE INDEX thumbnails_clip ON thumbnails(clip_id);
    CREATE INDEX thumbnails_created_at ON thumbnails(created_at);
    """,
    # 3: the external teacher's per-frame probabilities, computed on the face crop at capture
    # time (frames are never stored); NULL for frames recorded without a teacher.
    """
    ALTER TABLE frames ADD COLUMN teacher BLOB;   -- (K,) float32 or NULL
    """,
)
LATEST = len(MIGRATIONS)


class SchemaError(ValueError):
    """A database this software must not open; the message says what to do."""


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def backup_path(db_path: Path, version: int) -> Path:
    return db_path.with_name(f"{db_path.name}.bak-v{version}")


def migrate(db: sqlite_utils.Database, db_path: Path | None, target: int = LATEST) -> int:
    """Bring ``db`` to ``target``; returns the version it had. Refuses newer databases."""
    current = schema_version(db)
    if current > LATEST:
        raise SchemaError(
            f"{db_path or 'database'} has schema version {current}, newer than this software "
            f"understands ({LATEST}); upgrade fedvfer, or point --db at another file"
        )
    if current >= target:
        return current
    if current > 0 and db_path is not None:
        dest = backup_path(db_path, current)
        with sqlite3.connect(dest) as out:
            db.conn.backup(out)
        out.close()
        log.info("backed up %s (schema v%s) to %s before migrating", db_path, current, dest)
    for number in range(current + 1, target + 1):
        with db.atomic():
            db.executescript(MIGRATIONS[number - 1])
            db.execute(f"PRAGMA user_version = {number}")
        log.info("migrated %s to schema v%s", db_path or "database", number)
    return current
