"""The aggregator's SQLite state (sqlite-utils, WAL): typed access to what survives a kill -9.

The tables and their migrations are :mod:`broker_aggregator.schema`. One :class:`State` per
thread that owns the connection (the service loop's). ``accepted`` doubles as the answer
table: its rows are kept for the last :data:`ANSWER_ROUNDS` finished rounds, so a resend of a
counted update is answered ``stored``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from broker_aggregator.payloads import PayloadFiles
from broker_aggregator.schema import StateError, open_db, payload_dir

__all__ = ["ANSWER_ROUNDS", "RoundRow", "State", "StateError", "payload_dir"]

log = logging.getLogger(__name__)


#: Rounds whose answers (the ``accepted`` rows) are kept after they finish, so a late resend of
#: a counted update is still answered ``stored``.
ANSWER_ROUNDS = 5


@dataclass(frozen=True)
class RoundRow:
    round_id: int
    base_version: int
    state: str
    opened_at: float
    deadline: float
    extensions: int


class State:
    """Typed access to the tables; one instance per thread that owns the connection."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.db = open_db(path, fsync=fsync)
        self.fsync = fsync
        self.payloads = PayloadFiles(payload_dir(Path(path)))
        self._staged: list[tuple[object, ...]] = []
        self._staged_latest: dict[tuple[int, str], tuple[int, str]] = {}
        self._staged_copies: dict[tuple[int, str], int] = {}

    def close(self) -> None:
        self.payloads.close()
        self.db.conn.close()

    def begin(self) -> None:
        self.db.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Write the staged bodies (one writev), index them, and commit (the group commit).

        With ``fsync`` the bodies reach the disk before the index that points at them.
        """
        self.payloads.flush()
        if self._staged:
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO updates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self._staged
            )
        if self.fsync:
            self.payloads.sync()
        self.db.conn.execute("COMMIT")
        self._staged, self._staged_latest, self._staged_copies = [], {}, {}

    def rollback(self) -> None:
        """Forget the staged bodies and roll back the open transaction (if any)."""
        self.payloads.discard()
        self._staged, self._staged_latest, self._staged_copies = [], {}, {}
        if self.db.conn.in_transaction:
            self.db.conn.execute("ROLLBACK")

    def accepted_count(self, round_id: int) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM accepted WHERE round_id=?", [round_id]
        ).fetchone()
        return int(row[0])

    # centrals -------------------------------------------------------------------------
    def latest_central(self) -> tuple[int, bytes] | None:
        row = self.db.execute(
            "SELECT version, frame FROM centrals ORDER BY version DESC LIMIT 1"
        ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def central_frame(self, version: int) -> bytes | None:
        """The signed frame of central ``version`` (None if there is none)."""
        row = self.db.execute("SELECT frame FROM centrals WHERE version = ?", [version]).fetchone()
        return bytes(row[0]) if row else None

    def add_central(
        self, version: int, round_id: int, created_at: float, n: int, frame: bytes
    ) -> None:
        self.db.conn.execute(
            "INSERT OR REPLACE INTO centrals VALUES (?, ?, ?, ?, ?)",
            [version, round_id, created_at, n, frame],
        )

    # rounds ---------------------------------------------------------------------------
    def current_round(self) -> RoundRow | None:
        row = self.db.execute(
            "SELECT round_id, base_version, state, opened_at, deadline, extensions FROM rounds "
            "ORDER BY round_id DESC LIMIT 1"
        ).fetchone()
        return RoundRow(*row) if row else None

    def finished_rounds(self) -> int:
        return int(
            self.db.execute("SELECT count(*) FROM rounds WHERE state='finished'").fetchone()[0]
        )

    def open_round(
        self, round_id: int, base_version: int, opened_at: float, deadline: float
    ) -> None:
        self.db.conn.execute(
            "INSERT OR REPLACE INTO rounds (round_id, base_version, state, opened_at, deadline, "
            "extensions) VALUES (?, ?, 'open', ?, ?, 0)",
            [round_id, base_version, opened_at, deadline],
        )

    def extend_round(self, round_id: int, deadline: float) -> None:
        self.db.execute(
            "UPDATE rounds SET deadline=?, extensions=extensions+1 WHERE round_id=?",
            [deadline, round_id],
        )

    def set_closing(self, round_id: int) -> None:
        self.db.execute("UPDATE rounds SET state='closing' WHERE round_id=?", [round_id])

    def finish_round(
        self, round_id: int, version: int, created_at: float, n: int, frame: bytes | None
    ) -> None:
        """Store the new central (None: keep the previous one) and finish the round in one
        transaction; drop the bodies and the answers of rounds older than ANSWER_ROUNDS."""
        c = self.db.conn
        c.execute("BEGIN")
        try:
            if frame is not None:
                self.add_central(version, round_id, created_at, n, frame)
            c.execute(
                "UPDATE rounds SET state='finished', closed_at=?, result_version=?, "
                "num_submissions=? WHERE round_id=?",
                [created_at, version, n, round_id],
            )
            c.execute("DELETE FROM updates WHERE round_id<=?", [round_id])
            c.execute("DELETE FROM centrals WHERE version<?", [version - 4])
            c.execute("DELETE FROM accepted WHERE round_id<=?", [round_id - ANSWER_ROUNDS])
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")
        self.payloads.drop_through(round_id)

    def drop_bodies_through(self, round_id: int) -> None:
        """A worker's cleanup once the leader finished ``round_id`` (its index and files)."""
        self.db.execute("DELETE FROM updates WHERE round_id<=?", [round_id])
        self.payloads.drop_through(round_id)

    # leader: which (node, seq) counts, held by which worker ---------------------------------
    def record_accepted(
        self,
        round_id: int,
        node_id: str,
        worker_id: str,
        seq: int,
        update_id: str,
        factor: float | None = None,
    ) -> None:
        self.db.conn.execute(
            "INSERT OR REPLACE INTO accepted (round_id, node_id, worker_id, seq, update_id, "
            "factor) VALUES (?, ?, ?, ?, ?, ?)",
            [round_id, node_id, worker_id, seq, update_id, factor],
        )

    def accepted_factors(self, round_id: int) -> dict[str, float]:
        """node -> FedAvg factor of each counted update whose worker reported one."""
        rows = self.db.execute(
            "SELECT node_id, factor FROM accepted WHERE round_id=? AND factor IS NOT NULL",
            [round_id],
        ).fetchall()
        return {str(r[0]): float(r[1]) for r in rows}

    def body_spans(self, round_id: int, wanted: dict[str, int]) -> list[tuple[str, int, int]]:
        """(node, offset, length) in the round file of exactly the wanted (node -> seq)."""
        out = []
        for node in sorted(wanted):
            row = self.db.execute(
                "SELECT offset, length FROM updates WHERE round_id=? AND node_id=? AND seq=?",
                [round_id, node, wanted[node]],
            ).fetchone()
            if row is not None:
                out.append((node, int(row[0]), int(row[1])))
        return out

    def counted(self, round_id: int, node_id: str) -> tuple[int, str] | None:
        """(seq, update_id) of the node's update that counts in ``round_id``: the answer table."""
        row = self.db.execute(
            "SELECT seq, update_id FROM accepted WHERE round_id=? AND node_id=?",
            [round_id, node_id],
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def counted_updates(self, round_id: int) -> list[tuple[str, int, str]]:
        """(node, seq, update_id) of every update that counts in ``round_id``, in node order."""
        rows = self.db.execute(
            "SELECT node_id, seq, update_id FROM accepted WHERE round_id=? ORDER BY node_id",
            [round_id],
        ).fetchall()
        return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]

    def accepted(self, round_id: int) -> dict[str, tuple[str, int]]:
        rows = self.db.execute(
            "SELECT node_id, worker_id, seq FROM accepted WHERE round_id=?", [round_id]
        ).fetchall()
        return {r[0]: (r[1], int(r[2])) for r in rows}

    # worker: bodies ---------------------------------------------------------------------
    def stored_seq(self, round_id: int, node_id: str) -> tuple[int, str] | None:
        """(seq, update_id) of the newest update stored (or staged) for the node in ``round_id``."""
        staged = self._staged_latest.get((round_id, node_id))
        if staged is not None:
            return staged
        row = self.db.execute(
            "SELECT seq, update_id FROM updates WHERE round_id=? AND node_id=? "
            "ORDER BY seq DESC LIMIT 1",
            [round_id, node_id],
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def store_update(
        self,
        round_id: int,
        node_id: str,
        seq: int,
        update_id: str,
        factor: float,
        received_at: float,
        dtype: str,
        body: bytes,
    ) -> None:
        """Stage the body for the round's file and its index row; :meth:`commit` writes both."""
        offset = self.payloads.stage(round_id, body)
        row = (round_id, node_id, seq, update_id, factor, received_at, dtype, offset, len(body))
        self._staged.append(row)
        self._staged_latest[(round_id, node_id)] = (seq, update_id)
        key = (round_id, node_id)
        self._staged_copies[key] = self._staged_copies.get(key, 0) + 1

    def stored_copies(self, round_id: int, node_id: str) -> int:
        """Bodies stored (or staged) for the node in ``round_id``: its first and replacements."""
        row = self.db.execute(
            "SELECT count(*) FROM updates WHERE round_id=? AND node_id=?", [round_id, node_id]
        ).fetchone()
        return int(row[0]) + self._staged_copies.get((round_id, node_id), 0)

    def bodies(
        self, round_id: int, wanted: dict[str, int]
    ) -> Iterator[tuple[str, int, float, bytes]]:
        """(node, seq, factor, body) of exactly the wanted (node -> seq), in node-id order."""
        with self.payloads.reader(round_id) as read:
            for node in sorted(wanted):
                row = self.db.execute(
                    "SELECT factor, offset, length FROM updates "
                    "WHERE round_id=? AND node_id=? AND seq=?",
                    [round_id, node, wanted[node]],
                ).fetchone()
                body = read(int(row[1]), int(row[2])) if row else None
                if row is not None and body is not None:
                    yield node, wanted[node], float(row[0]), body

    def latest_updates(self, round_id: int) -> list[tuple[str, int, str, float]]:
        """(node, seq, update_id, factor) of each node's newest stored update, in node order."""
        rows = self.db.execute(
            "SELECT node_id, max(seq), update_id, factor FROM updates WHERE round_id=? "
            "GROUP BY node_id ORDER BY node_id",
            [round_id],
        ).fetchall()
        return [(r[0], int(r[1]), str(r[2]), float(r[3])) for r in rows]

    def count_rejection(self, round_id: int, reason: str) -> None:
        self.db.execute(
            "INSERT INTO rejections(round_id, reason, count) VALUES (?, ?, 1) "
            "ON CONFLICT(round_id, reason) DO UPDATE SET count=count+1",
            [round_id, reason],
        )

    # poison: messages whose handling raised ---------------------------------------------
    def add_poison(
        self, topic: str, node_id: str | None, update_id: str | None, reason: str, detail: str
    ) -> None:
        self.db.conn.execute(
            "INSERT INTO poison (received_at, topic, node_id, update_id, reason, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [time.time(), topic[:300], node_id, update_id, reason[:64], detail[:2000]],
        )

    def poisoned(self) -> set[tuple[str, str]]:
        """(node, update_id) of every poisoned update (small: read once at start)."""
        rows = self.db.execute(
            "SELECT node_id, update_id FROM poison WHERE update_id IS NOT NULL"
        ).fetchall()
        return {(str(r[0]), str(r[1])) for r in rows}

    def rejections(self) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT reason, sum(count) FROM rejections GROUP BY reason"
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}
