"""The one migration helper every store uses: atomic steps, a backup first, newer refused."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from broker_aggregator.store import State, StateError
from edge_node.federation.outbox import Outbox, OutboxError
from edge_node.migrations import SchemaError as EdgeSchemaError
from vfer.sqlite_schema import SchemaError, backup_path, migrate, open_wal, schema_version

STEPS = [
    "CREATE TABLE a (x INTEGER); -- the first table\nINSERT INTO a VALUES (1);",
    "CREATE TABLE b (y TEXT);\nINSERT INTO b VALUES ('semi;colon');",
]


def test_steps_run_in_order_with_a_backup_before_an_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = open_wal(path)
    assert migrate(db, path, STEPS[:1]) == 0 and schema_version(db) == 1
    assert not backup_path(path, 1).exists()  # a new database needs no backup
    assert migrate(db, path, STEPS) == 1 and schema_version(db) == 2
    assert db.execute("SELECT y FROM b").fetchone()[0] == "semi;colon"
    with sqlite3.connect(backup_path(path, 1)) as old:
        assert old.execute("PRAGMA user_version").fetchone()[0] == 1
        assert old.execute("SELECT x FROM a").fetchone()[0] == 1


def test_a_failing_step_leaves_the_database_at_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = open_wal(path)
    broken = [STEPS[0], "CREATE TABLE c (z INTEGER);\nINSERT INTO nowhere VALUES (1);"]
    with pytest.raises(sqlite3.OperationalError):
        migrate(db, path, broken)
    assert schema_version(db) == 1
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "c" not in tables  # the half-done step was rolled back whole


def test_two_openers_racing_on_a_new_file_apply_each_step_once(tmp_path: Path) -> None:
    """The node creating its clip db while another process (a CLI, a test) opens it: the second
    one read version 0, waits for the write lock, and must not run CREATE TABLE again."""
    path = tmp_path / "s.db"
    holding, release = threading.Event(), threading.Event()

    def slow_first(db: object, _path: Path) -> None:
        db.execute("CREATE TABLE a (x INTEGER)")  # type: ignore[attr-defined]
        holding.set()
        release.wait(10)

    errors: list[BaseException] = []

    def run(steps: list) -> None:
        try:
            migrate(open_wal(path, check_same_thread=False), path, steps)
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    first = threading.Thread(target=run, args=([slow_first, STEPS[1]],))
    first.start()
    assert holding.wait(10)
    second = threading.Thread(target=run, args=([STEPS[0], STEPS[1]],))
    second.start()
    time.sleep(0.5)  # the second opener has read version 0 and waits on BEGIN IMMEDIATE
    release.set()
    first.join(20)
    second.join(20)
    assert errors == []
    db = open_wal(path)
    assert schema_version(db) == 2
    assert db.execute("SELECT count(*) FROM b").fetchone()[0] == 1  # step 2 ran once


def test_every_store_refuses_a_newer_database_with_the_one_error(tmp_path: Path) -> None:
    assert StateError is SchemaError and OutboxError is SchemaError
    assert EdgeSchemaError is SchemaError
    for name, opener in (("state.db", State), ("outbox.db", Outbox)):
        path = tmp_path / name
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA user_version = 99")
        with pytest.raises(SchemaError, match="newer than this software"):
            opener(path)
