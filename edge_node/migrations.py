"""The clip database's schema, as numbered migrations (``PRAGMA user_version`` counts them).

They run through :mod:`vfer.sqlite_schema`, as every store's do: each in its own transaction
with the version bump, a backup to ``<db>.bak-v<N>`` first, a newer database refused.

Never edit a migration that has shipped; add the next one.
"""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from vfer.sqlite_schema import SchemaError, backup_path, schema_version
from vfer.sqlite_schema import migrate as run_migrations

__all__ = ["LATEST", "MIGRATIONS", "SchemaError", "backup_path", "migrate", "schema_version"]

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
    # 4: every personalization's outcome, gate verdict included (no face data: counts, losses,
    # the gate's reasons), so a restart loses none (edge_node.personalization.results).
    """
    CREATE TABLE adaptations (
        id INTEGER PRIMARY KEY,
        finished_at REAL NOT NULL,          -- epoch seconds
        status TEXT NOT NULL,               -- adapted | skipped | rejected | blocked
        new_version TEXT,                   -- the personalized head written (adapted)
        report TEXT NOT NULL                -- JSON: personalization.protocol.AdaptReport
    );
    CREATE INDEX adaptations_finished_at ON adaptations(finished_at);
    """,
    # 5: the privacy ledger: one row per DP fine-tune (adaptation.privacy), what the accountant
    # composes over the window (edge_node.personalization.ledger). No face data.
    """
    CREATE TABLE privacy_ledger (
        id INTEGER PRIMARY KEY,
        night INTEGER NOT NULL,             -- date.toordinal() of the night it counts for
        recorded_at REAL NOT NULL,          -- epoch seconds
        spend TEXT NOT NULL,                -- JSON: vfer.privacy.accountant.NightSpend
        spent_after REAL NOT NULL,          -- the window's composed epsilon with this night
        epsilon_window REAL NOT NULL        -- the window's budget then
    );
    CREATE INDEX privacy_ledger_night ON privacy_ledger(night);
    """,
)
LATEST = len(MIGRATIONS)


def migrate(db: sqlite_utils.Database, db_path: Path | None, target: int = LATEST) -> int:
    """Bring ``db`` to ``target``; returns the version it had. Refuses newer databases."""
    return run_migrations(
        db,
        db_path,
        MIGRATIONS,
        what="clip database",
        newer_hint="upgrade fedvfer, or point --db at another file",
        target=target,
    )
