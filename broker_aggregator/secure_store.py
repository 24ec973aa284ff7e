"""The secure rounds' rows of the aggregator's state database (tables of migration 4).

``secagg_rounds``: per secure round the group seed (committed in the signed round message,
revealed with the groups), the nodes whose joins were accepted and, once drawn, the groups.
``secagg_groups``: each group's :meth:`vfer.secagg.GroupAggregator.dump` after every stage
(running masked sum and protocol state; never one node's update or secret). Rows of rounds
older than :data:`KEEP_ROUNDS` are dropped when a round finishes.
"""

from __future__ import annotations

import json

import sqlite_utils

#: Finished secure rounds whose rows are kept (for an operator reading why a group was dropped).
KEEP_ROUNDS = 5


class SecureStore:
    """Typed access to ``secagg_rounds`` and ``secagg_groups`` on the state's connection."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def seed(self, round_id: int) -> bytes | None:
        row = self.db.execute(
            "SELECT seed FROM secagg_rounds WHERE round_id=?", [round_id]
        ).fetchone()
        return bytes(row[0]) if row else None

    def new_round(self, round_id: int, seed: bytes) -> None:
        self.db.conn.execute(
            "INSERT OR IGNORE INTO secagg_rounds (round_id, seed) VALUES (?, ?)", [round_id, seed]
        )

    def joined(self, round_id: int) -> list[str]:
        row = self.db.execute(
            "SELECT joined FROM secagg_rounds WHERE round_id=?", [round_id]
        ).fetchone()
        return list(json.loads(row[0])) if row else []

    def set_joined(self, round_id: int, nodes: list[str]) -> None:
        self.db.conn.execute(
            "UPDATE secagg_rounds SET joined=? WHERE round_id=?", [json.dumps(nodes), round_id]
        )

    def groups(self, round_id: int) -> list[list[str]] | None:
        row = self.db.execute(
            "SELECT groups FROM secagg_rounds WHERE round_id=?", [round_id]
        ).fetchone()
        return json.loads(row[0]) if row and row[0] is not None else None

    def set_groups(self, round_id: int, groups: list[list[str]]) -> None:
        self.db.conn.execute(
            "UPDATE secagg_rounds SET groups=? WHERE round_id=?", [json.dumps(groups), round_id]
        )

    def save_group(self, round_id: int, group_id: int, stage: str, state: bytes) -> None:
        self.db.conn.execute(
            "INSERT OR REPLACE INTO secagg_groups VALUES (?, ?, ?, ?)",
            [round_id, group_id, stage, state],
        )

    def group_states(self, round_id: int) -> dict[int, bytes]:
        rows = self.db.execute(
            "SELECT group_id, state FROM secagg_groups WHERE round_id=?", [round_id]
        ).fetchall()
        return {int(r[0]): bytes(r[1]) for r in rows}

    def forget_before(self, round_id: int) -> None:
        """Drop the rows of rounds more than :data:`KEEP_ROUNDS` before ``round_id``."""
        old = round_id - KEEP_ROUNDS
        self.db.conn.execute("DELETE FROM secagg_groups WHERE round_id<=?", [old])
        self.db.conn.execute("DELETE FROM secagg_rounds WHERE round_id<=?", [old])

    def reset(self, round_id: int) -> None:
        """Forget a round's secure state (it reopens: a new seed, new joins, new groups)."""
        self.db.conn.execute("DELETE FROM secagg_groups WHERE round_id=?", [round_id])
        self.db.conn.execute("DELETE FROM secagg_rounds WHERE round_id=?", [round_id])
