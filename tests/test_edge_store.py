"""The clip store on real SQLite files: round trips, migrations, kill -9, a full disk."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_node import migrations
from edge_node.migrations import LATEST, SchemaError, backup_path, migrate, schema_version
from edge_node.retention import DAY_S, RetentionPolicy
from edge_node.store import ClipStore, NewClip, StoreFullError

CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
REPO = Path(__file__).resolve().parents[1]


def new_clip(
    seed: int, t: int = 12, started_at: float = 1_800_000_000.0, top: int = 3, classes=CLASSES
) -> NewClip:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    k = len(classes)
    ifer = rng.dirichlet(np.ones(k), size=t).astype(np.float32)
    vfer = np.full(k, 0.1 / (k - 1), np.float32)
    vfer[top] = 0.9
    return NewClip(
        started_at=started_at,
        ended_at=started_at + t / 30,
        face_ratio=0.9,
        bundle_id="b" * 64,
        classes=classes,
        times=np.arange(t) / 30,
        embeddings=rng.normal(0, 1, (t, 1280)).astype(np.float32),
        ifer=ifer,
        vfer_probs=vfer,
    )


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    return str(result)


def test_a_clip_round_trips_with_float16_embeddings(tmp_path: Path) -> None:
    clip = new_clip(1)
    with ClipStore(tmp_path / "n.db") as store:
        cid = store.add_clip(clip)
        [row] = store.clips()
        assert (row.id, row.frame_count, row.bundle_id, row.classes) == (cid, 12, "b" * 64, CLASSES)
        assert row.prediction == "happiness" and row.confidence == pytest.approx(0.9)
        np.testing.assert_allclose(row.ifer_mean, clip.ifer.mean(axis=0), rtol=1e-6)
        emb = store.frame_embeddings(cid)
        assert emb.shape == (12, 1280) and emb.dtype == np.float32
        np.testing.assert_allclose(emb, clip.embeddings, rtol=1e-3, atol=1e-3)
        assert not np.array_equal(emb, clip.embeddings)  # float16 on disk, really
        np.testing.assert_array_equal(store.frame_ifer(cid), clip.ifer)
        np.testing.assert_allclose(store.frame_times(cid), clip.times)
        with pytest.raises(KeyError, match="no clip 99"):
            store.frame_embeddings(99)
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_counts_timeline_recent_and_class_names_survive_a_model_change(tmp_path: Path) -> None:
    four = ("happiness", "sadness", "anger", "neutral")
    with ClipStore(tmp_path / "n.db") as store:
        store.add_clip(new_clip(1, started_at=1000.0, top=3))  # happiness (K=6)
        store.add_clip(new_clip(2, started_at=1100.0, top=0))  # anger
        store.add_clip(new_clip(3, started_at=5000.0, top=0, classes=four))  # happiness (K=4)
        assert store.class_counts() == {"happiness": 2, "anger": 1}
        assert [r.started_at for r in store.recent_clips(2)] == [5000.0, 1100.0]
        assert store.recent_clips(5)[0].classes == four
        buckets = store.timeline(3600)
        assert [(b.start, b.counts) for b in buckets] == [
            (0.0, {"happiness": 1, "anger": 1}),
            (3600.0, {"happiness": 1}),
        ]
        with pytest.raises(ValueError, match="bucket_s"):
            store.timeline(0)


def test_delete_all_vacuums_and_leaves_no_embedding_bytes(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    clip = new_clip(5, t=200)
    with ClipStore(db) as store:
        for i in range(5):
            store.add_clip(new_clip(i, t=200))
        store.add_clip(clip)
        full = store.size_bytes()
        assert store.delete_all() == 6
        assert store.count() == 0 and store.clips() == []
        assert store.size_bytes() < full / 10
    needle = clip.embeddings[7].astype("<f2").tobytes()[:64]
    for path in tmp_path.iterdir():
        assert needle not in path.read_bytes(), path


def test_retention_deletes_old_then_oldest_until_under_the_size(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    with ClipStore(tmp_path / "n.db") as store:
        old = store.add_clip(new_clip(0, started_at=now - 40 * DAY_S))
        ids = [
            store.add_clip(new_clip(i, t=100, started_at=now - (10 - i) * 3600))
            for i in range(1, 9)
        ]
        plan = store.apply_retention(RetentionPolicy(30 * DAY_S, 10**9), now)
        assert plan.by_age == (old,) and plan.by_size == ()
        limit = store.used_bytes() - 3 * 100 * 2600
        plan = store.apply_retention(RetentionPolicy(30 * DAY_S, limit), now)
        assert plan.by_size == tuple(ids[: len(plan.by_size)]) and 3 <= len(plan.by_size) <= 4
        assert [r.id for r in store.clips()] == ids[len(plan.by_size) :]


def test_thumbnails_are_opt_in_and_expire_on_their_own(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    clip = new_clip(1, started_at=now - 8 * DAY_S)
    with ClipStore(tmp_path / "n.db") as store:
        plain = store.add_clip(new_clip(2, started_at=now - DAY_S))
        cid = store.add_clip(NewClip(**{**clip.__dict__, "thumbnails": (b"jpeg1", b"jpeg2")}))
        assert store.thumbnails(plain) == [] and store.thumbnails(cid) == [b"jpeg1", b"jpeg2"]
        store.apply_retention(
            RetentionPolicy(30 * DAY_S, 10**9, thumbnail_max_age_s=7 * DAY_S), now
        )
        assert store.thumbnails(cid) == [] and store.count() == 2


def test_an_older_schema_migrates_after_a_backup(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    conn = sqlite3.connect(db, isolation_level=None)
    import sqlite_utils

    v1 = sqlite_utils.Database(conn)
    migrate(v1, db, target=1)
    v1.execute("INSERT INTO class_sets (names) VALUES (?)", [json.dumps(list(CLASSES))])
    v1.execute(
        "INSERT INTO clips (started_at, ended_at, frame_count, face_ratio, bundle_id, class_set_id,"
        " vfer_probs, ifer_mean) VALUES (1, 2, 0, 1.0, 'x', 1, ?, ?)",
        [np.ones(6, "<f4").tobytes(), np.ones(6, "<f4").tobytes()],
    )
    assert schema_version(v1) == 1 and "thumbnails" not in v1.table_names()
    conn.close()
    with ClipStore(db) as store:
        assert schema_version(store.db) == LATEST == 5
        assert "thumbnails" in store.db.table_names() and store.count() == 1
    backup = backup_path(db, 1)
    with sqlite3.connect(backup) as b:
        assert b.execute("PRAGMA user_version").fetchone()[0] == 1
        assert b.execute("SELECT count(*) FROM clips").fetchone()[0] == 1
    b.close()


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(
        SchemaError, match=r"schema version 99, newer than this software understands \(5\)"
    ):
        ClipStore(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    conn.close()


def test_a_failing_migration_leaves_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = (migrations.MIGRATIONS[0], "CREATE TABLE half (x); CREATE TABLE oops (;")
    monkeypatch.setattr(migrations, "MIGRATIONS", broken)
    with pytest.raises(sqlite3.OperationalError):
        ClipStore(tmp_path / "n.db")
    with sqlite3.connect(tmp_path / "n.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert "clips" in tables and "half" not in tables


def test_a_full_disk_rolls_the_clip_back_and_keeps_the_database(tmp_path: Path) -> None:
    """Full disk simulated with SQLite's max_page_count (no root for a small tmpfs mount)."""
    db = tmp_path / "n.db"
    with ClipStore(db) as store:
        first = store.add_clip(new_clip(1, t=30))
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages + 30}")
        with pytest.raises(StoreFullError, match="disk full"):
            for i in range(50):
                store.add_clip(new_clip(i, t=60))
        n = store.count()
        rows = store.db.execute("SELECT count(*) FROM frames").fetchone()[0]
        assert rows == sum(r.frame_count for r in store.clips())  # no half-written clip
        assert store.frame_embeddings(first).shape == (30, 1280)
    assert integrity(db) == "ok"
    with ClipStore(db) as store:
        assert store.count() == n and store.add_clip(new_clip(9)) > 0  # space again: writes go on


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {repo!r})
    from tests.test_edge_store import new_clip
    from edge_node.store import ClipStore
    with ClipStore({db!r}) as store:
        i = 0
        while True:
            store.add_clip(new_clip(i, t=150))
            i += 1
            print(i, flush=True)
    """
)


@pytest.mark.slow
def test_kill_9_while_writing_leaves_a_sound_database(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(repo=str(REPO), db=str(db))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for _ in range(20):  # 20 committed clips, then kill it in the middle of the next ones
            line = proc.stdout.readline()
            assert line, "writer died early"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert integrity(db) == "ok"
    with ClipStore(db) as store:
        clips = store.clips()
        assert len(clips) >= 20
        frames = store.db.execute(
            "SELECT clip_id, count(*) FROM frames GROUP BY clip_id"
        ).fetchall()
        assert dict(frames) == {c.id: c.frame_count for c in clips}
