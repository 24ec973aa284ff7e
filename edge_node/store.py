"""The node's clip database: SQLite through sqlite-utils, WAL, schema by numbered migrations.

Written by the capture loop (one transaction per clip, so a crash or a kill leaves whole clips or
none), read by the nightly personalization and the kiosk's operator page through :class:`ClipStore`.

Embeddings are stored as float16: half the bytes of float32 (2,560 per frame), and the rounding
(relative error below 5e-4) is far under what the int8 backbone itself resolves, so v trains and
predicts the same on them. The alternative, documented but not enabled, is the int8 backbone's own
quantized pool values (1,280 bytes per frame, exact for that backbone, but tied to its scale and
zero point and meaningless for a float backbone); ``clips.embedding_dtype`` leaves room for it.

Each clip keeps the class names it was predicted with (``class_sets``), so its rows stay readable
after the bundle changes. Raw pixels are never stored, apart from opt-in thumbnails.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import sqlite_utils

from edge_node.migrations import migrate
from edge_node.retention import ClipSize, RetentionPlan, RetentionPolicy, expired_thumbnails
from edge_node.retention import plan_retention as _plan
from vfer.heads_spec import EMBEDDING_DIM
from vfer.selection import clip_mean_probs

log = logging.getLogger(__name__)

EMBEDDING_DTYPE = "float16"
_F16, _F32 = np.dtype("<f2"), np.dtype("<f4")
#: bytes a frame row takes beyond its blobs (keys, time, b-tree cell): used for size estimates
ROW_OVERHEAD = 40
_CLIP_COLUMNS = (
    "c.id, c.started_at, c.ended_at, c.frame_count, c.face_ratio, c.bundle_id, "
    "c.vfer_probs, c.ifer_mean, s.names"
)


class StoreFullError(OSError):
    """The disk (or the database's page limit) is full; nothing of the clip was written."""


@dataclass(frozen=True)
class ClipRow:
    """One stored clip, as the lead's personalization and the operator page read it."""

    id: int
    started_at: float  # epoch seconds
    ended_at: float
    frame_count: int  # T
    face_ratio: float
    bundle_id: str
    vfer_probs: np.ndarray  # (K,) float32
    ifer_mean: np.ndarray  # (K,) float32, mean of the per-frame IFER probabilities (Eq. 1 input)
    classes: tuple[str, ...] = ()  # class names of the bundle the clip was predicted with

    @property
    def prediction(self) -> str:
        return self.classes[int(np.argmax(self.vfer_probs))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.vfer_probs))


@dataclass(frozen=True)
class NewClip:
    """A finished clip handed to :meth:`ClipStore.add_clip`."""

    started_at: float
    ended_at: float
    face_ratio: float
    bundle_id: str
    classes: tuple[str, ...]
    times: np.ndarray  # (T,) seconds since the first frame
    embeddings: np.ndarray  # (T, 1280)
    ifer: np.ndarray  # (T, K)
    vfer_probs: np.ndarray  # (K,)
    thumbnails: tuple[bytes, ...] = field(default=())  # JPEGs, only when opted in
    teacher: np.ndarray | None = None  # (T, K) the bundle's external teacher, when it has one

    def __post_init__(self) -> None:
        t, k = len(self.embeddings), len(self.classes)
        if self.embeddings.shape != (t, EMBEDDING_DIM) or t == 0:
            raise ValueError(f"embeddings must be (T>0, 1280), got {self.embeddings.shape}")
        if self.ifer.shape != (t, k) or self.vfer_probs.shape != (k,) or len(self.times) != t:
            raise ValueError(
                f"clip of T={t}, K={k}: ifer {self.ifer.shape}, vfer {self.vfer_probs.shape}, "
                f"times {len(self.times)} do not agree"
            )
        if self.teacher is not None and self.teacher.shape != (t, k):
            raise ValueError(f"clip of T={t}, K={k}: teacher {self.teacher.shape} does not agree")


@dataclass(frozen=True)
class TimelineBucket:
    start: float  # epoch seconds, a multiple of bucket_s
    counts: dict[str, int]  # clips started in the bucket, by VFER prediction


def _blob(values: np.ndarray, dtype: np.dtype) -> bytes:
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)


class ClipStore:
    """The clip database at ``db_path`` (created and migrated on open). A context manager."""

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self.path = Path(db_path)
        if self.path.parent and not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: folder {self.path.parent} does not exist")
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        try:
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable across app crashes
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA secure_delete = ON")  # deleted clips are overwritten
            migrate(self.db, self.path)
        except BaseException:
            conn.close()
            raise
        self._class_sets: dict[tuple[str, ...], int] = {}

    # -- writing ---------------------------------------------------------------------------

    def _class_set_id(self, classes: tuple[str, ...]) -> int:
        if classes not in self._class_sets:
            names = json.dumps(list(classes))
            self.db.execute("INSERT OR IGNORE INTO class_sets (names) VALUES (?)", [names])
            row = self.db.execute("SELECT id FROM class_sets WHERE names = ?", [names]).fetchone()
            self._class_sets[classes] = int(row[0])
        return self._class_sets[classes]

    def add_clip(self, clip: NewClip) -> int:
        """Write a clip and all its frames in one transaction; returns its id."""
        ifer = np.asarray(clip.ifer, dtype=np.float32)
        teacher = (
            [None] * len(ifer)
            if clip.teacher is None
            else [_blob(p, _F32) for p in np.asarray(clip.teacher, dtype=np.float32)]
        )
        try:
            with self.db.atomic():
                cursor = self.db.execute(
                    "INSERT INTO clips (started_at, ended_at, frame_count, face_ratio, bundle_id,"
                    " class_set_id, vfer_probs, ifer_mean, embedding_dtype)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        clip.started_at,
                        clip.ended_at,
                        len(clip.embeddings),
                        clip.face_ratio,
                        clip.bundle_id,
                        self._class_set_id(clip.classes),
                        _blob(clip.vfer_probs, _F32),
                        _blob(clip_mean_probs(ifer), _F32),
                        EMBEDDING_DTYPE,
                    ],
                )
                clip_id = int(cursor.lastrowid or 0)
                self.db.conn.executemany(
                    "INSERT INTO frames (clip_id, idx, t, embedding, ifer, teacher)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (clip_id, i, float(t), _blob(e, _F16), _blob(p, _F32), tp)
                        for i, (t, e, p, tp) in enumerate(
                            zip(clip.times, clip.embeddings, ifer, teacher, strict=True)
                        )
                    ],
                )
                self.db.conn.executemany(
                    "INSERT INTO thumbnails (clip_id, created_at, jpeg) VALUES (?, ?, ?)",
                    [(clip_id, clip.ended_at, jpeg) for jpeg in clip.thumbnails],
                )
        except sqlite3.Error as exc:
            self._class_sets.clear()  # the rollback may have undone a new class set
            if _is_full(exc):
                raise StoreFullError(f"{self.path}: disk full, clip not written ({exc})") from exc
            raise
        return clip_id

    # -- reading ---------------------------------------------------------------------------

    def _rows(self, where: str = "", params: list[object] | None = None) -> list[ClipRow]:
        sql = f"SELECT {_CLIP_COLUMNS} FROM clips c JOIN class_sets s ON s.id = c.class_set_id {where}"
        return [
            ClipRow(
                id=int(r[0]),
                started_at=float(r[1]),
                ended_at=float(r[2]),
                frame_count=int(r[3]),
                face_ratio=float(r[4]),
                bundle_id=str(r[5]),
                vfer_probs=np.frombuffer(r[6], _F32).copy(),
                ifer_mean=np.frombuffer(r[7], _F32).copy(),
                classes=tuple(json.loads(r[8])),
            )
            for r in self.db.execute(sql, params or [])
        ]

    def clips(self) -> list[ClipRow]:
        """Every clip, oldest first."""
        return self._rows("ORDER BY c.started_at, c.id")

    def clip(self, clip_id: int) -> ClipRow:
        rows = self._rows("WHERE c.id = ?", [clip_id])
        if not rows:
            raise KeyError(f"no clip {clip_id} in {self.path}")
        return rows[0]

    def recent_clips(self, limit: int = 20) -> list[ClipRow]:
        """The newest ``limit`` clips, newest first."""
        return self._rows("ORDER BY c.started_at DESC, c.id DESC LIMIT ?", [int(limit)])

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM clips").fetchone()[0])

    def _frame_blobs(self, clip_id: int, column: str) -> list[bytes]:
        blobs = [
            r[0]
            for r in self.db.execute(
                f"SELECT {column} FROM frames WHERE clip_id = ? ORDER BY idx", [clip_id]
            )
        ]
        if not blobs:
            self.clip(clip_id)  # raises KeyError for an unknown clip
        return blobs

    def frame_embeddings(self, clip_id: int) -> np.ndarray:
        """(T, 1280) float32 embeddings of a clip, in frame order."""
        blobs = self._frame_blobs(clip_id, "embedding")
        out = np.frombuffer(b"".join(blobs), _F16).astype(np.float32)
        return out.reshape(len(blobs), EMBEDDING_DIM)

    def frame_ifer(self, clip_id: int) -> np.ndarray:
        """(T, K) float32 per-frame IFER probabilities of a clip."""
        blobs = self._frame_blobs(clip_id, "ifer")
        return np.frombuffer(b"".join(blobs), _F32).reshape(len(blobs), -1).copy()

    def frame_teacher(self, clip_id: int) -> np.ndarray | None:
        """(T, K) float32 per-frame teacher probabilities, or None if any frame has none."""
        rows = self.db.execute(
            "SELECT teacher FROM frames WHERE clip_id = ? ORDER BY idx", [clip_id]
        ).fetchall()
        if not rows or any(r[0] is None for r in rows):
            return None
        return np.frombuffer(b"".join(r[0] for r in rows), _F32).reshape(len(rows), -1).copy()

    def frame_times(self, clip_id: int) -> np.ndarray:
        rows = self.db.execute("SELECT t FROM frames WHERE clip_id = ? ORDER BY idx", [clip_id])
        return np.array([r[0] for r in rows], dtype=np.float64)

    def thumbnails(self, clip_id: int) -> list[bytes]:
        rows = self.db.execute(
            "SELECT jpeg FROM thumbnails WHERE clip_id = ? ORDER BY id", [clip_id]
        )
        return [bytes(r[0]) for r in rows]

    def class_counts(self) -> dict[str, int]:
        """Clips per predicted class (VFER argmax, named by each clip's own class list)."""
        return dict(Counter(c.prediction for c in self.clips()))

    def timeline(self, bucket_s: float = 3600.0) -> list[TimelineBucket]:
        """The prediction mix over time: clips per class in consecutive ``bucket_s`` buckets."""
        if not bucket_s > 0:
            raise ValueError(f"bucket_s must be positive, got {bucket_s}")
        buckets: dict[float, Counter[str]] = {}
        for c in self.clips():
            start = (c.started_at // bucket_s) * bucket_s
            buckets.setdefault(start, Counter())[c.prediction] += 1
        return [TimelineBucket(s, dict(buckets[s])) for s in sorted(buckets)]

    # -- size, retention, deletion -----------------------------------------------------------

    def size_bytes(self) -> int:
        """Bytes on disk: the database file plus its WAL."""
        return sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(self.path.name + "-wal"))
            if p.exists()
        )

    def used_bytes(self) -> int:
        """Bytes in pages that hold data (free pages are reused before the file grows)."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        page = self.db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * page)

    def clip_sizes(self) -> list[ClipSize]:
        rows = self.db.execute(
            "SELECT c.id, c.started_at,"
            f" coalesce((SELECT sum(length(embedding) + length(ifer) + coalesce(length(teacher), 0) + {ROW_OVERHEAD})"
            "  FROM frames f WHERE f.clip_id = c.id), 0)"
            " + coalesce((SELECT sum(length(jpeg)) FROM thumbnails t WHERE t.clip_id = c.id), 0)"
            " + length(c.vfer_probs) + length(c.ifer_mean) + 100"
            " FROM clips c"
        )
        return [ClipSize(int(r[0]), float(r[1]), int(r[2])) for r in rows]

    def delete_clips(self, ids: list[int] | tuple[int, ...]) -> int:
        if not ids:
            return 0
        with self.db.atomic():
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ", ".join("?" * len(chunk))
                self.db.execute(f"DELETE FROM thumbnails WHERE clip_id IN ({marks})", chunk)
                self.db.execute(f"DELETE FROM frames WHERE clip_id IN ({marks})", chunk)
                self.db.execute(f"DELETE FROM clips WHERE id IN ({marks})", chunk)
        return len(ids)

    def apply_retention(self, policy: RetentionPolicy, now: float) -> RetentionPlan:
        """Delete what :func:`edge_node.retention.plan_retention` says, and expired thumbnails."""
        plan = _plan(self.clip_sizes(), self.used_bytes(), now, policy)
        self.delete_clips(plan.delete)
        thumbs = self.db.execute("SELECT id, created_at FROM thumbnails").fetchall()
        old = expired_thumbnails([(int(i), float(t)) for i, t in thumbs], now, policy)
        if old:
            with self.db.atomic():
                self.db.conn.executemany("DELETE FROM thumbnails WHERE id = ?", [(i,) for i in old])
        if plan.delete or old:
            log.info(
                "retention deleted %s clips by age, %s by size, %s thumbnails",
                len(plan.by_age),
                len(plan.by_size),
                len(old),
            )
        return plan

    def delete_all(self) -> int:
        """Delete every clip, frame and thumbnail, then VACUUM and empty the WAL. Returns clips deleted."""
        n = self.count()
        with self.db.atomic():
            for table in ("thumbnails", "frames", "clips", "class_sets"):
                self.db.execute(f"DELETE FROM {table}")
        self._class_sets.clear()
        self.db.vacuum()
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.info("deleted all %s clips and vacuumed %s", n, self.path)
        return n

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ClipStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
