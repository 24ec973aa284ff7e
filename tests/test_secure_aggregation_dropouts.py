"""Issue 23 live, dropouts: 8 real node clients on the provisioned TLS/ACL fleet, secure
aggregation on, some of them lost mid-round (their secure side goes silent, as a node that lost
power would). Lost after sharing its keys: its masks are removed and the central is the mean of
the other 7. Lost after uploading: it still counts, the central is the mean of all 8. Too many
lost: the group is dropped, nothing of it is revealed, and the log says why.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from broker_aggregator.store import State
from edge_node.federation import FederationClient
from tests.support.mosquitto import mosquitto_binary
from tests.support.provisioning_mqtt import Fleet
from tests.support.secure_fleet import (  # noqa: F401 - fleet is a fixture
    NAMES,
    TIMEOUT,
    Lossy,
    assert_central_right,
    central_of,
    fleet,
    node_client,
    start_aggregator,
    submit,
)

pytestmark = [
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed"),
    pytest.mark.slow,
]
STAGE_S = 3.0


def lose(node: FederationClient, at: str) -> None:
    """From its answer of kind ``at`` on, the node's secure side sends nothing."""
    assert node.secure is not None
    node.secure.__class__ = Lossy
    node.secure.lost_at = at  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("lost_at", "counted"),
    [("secagg_masked", 7), ("secagg_consistency", 8)],
    ids=["lost_after_sharing_keys", "lost_after_uploading"],
)
def test_one_lost_node_and_the_round_completes(
    fleet: Fleet,  # noqa: F811
    tmp_path: Path,
    lost_at: str,
    counted: int,
) -> None:
    agg = start_aggregator(fleet, tmp_path, len(NAMES), stage_s=STAGE_S)
    nodes = [node_client(fleet, n, tmp_path) for n in NAMES]
    lose(nodes[-1], lost_at)
    try:
        sent = {n.node_id: submit(n, seed=i)[0] for i, n in enumerate(nodes)}
        new = nodes[0].wait_central(timeout=TIMEOUT, newer_than=1)
        assert new is not None and new.version == 2, agg.log()[-3000:]
        log = agg.log()
    finally:
        for node in nodes:
            node.stop()
        agg.stop()
    lost = nodes[-1].node_id
    assert f"round 1 finished: central v2 from {counted} submissions" in log, log[-3000:]
    assert f"closes without ['{lost}']" in log
    if counted == 7:
        del sent[lost]  # it uploaded nothing: its pairwise masks were removed
    assert f"unmasked the sum of {counted} nodes" in log
    assert_central_right(central_of(tmp_path), sent)


def rejoined(db: Path) -> list[str]:
    """The joins of the reopened round 1, once it has some (polled: the aggregator writes)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        state = State(db)
        try:
            row = state.db.execute("SELECT joined FROM secagg_rounds WHERE round_id=1").fetchone()
        finally:
            state.close()
        if row is not None and len(json.loads(row[0])) >= 4:
            return sorted(json.loads(row[0]))
        time.sleep(0.1)
    return []


def test_too_few_left_drops_the_group_and_says_why(fleet: Fleet, tmp_path: Path) -> None:  # noqa: F811
    agg = start_aggregator(fleet, tmp_path, len(NAMES), stage_s=STAGE_S)
    nodes = [node_client(fleet, n, tmp_path) for n in NAMES]
    for node in nodes[4:]:
        lose(node, "secagg_shares")  # 4 of 8 advertise keys, then fall silent: t is 5
    try:
        for i, node in enumerate(nodes):
            submit(node, seed=i)
        assert agg.wait_for_log("dropped (too_few_shares)", TIMEOUT), agg.log()[-3000:]
        assert agg.wait_for_log("no usable submissions; reopening it", TIMEOUT), agg.log()[-3000:]
        # the 4 that answered join the reopened round again, with a new seed (the lost stay lost)
        assert rejoined(tmp_path / "agg.db") == [n.node_id for n in nodes[:4]], agg.log()[-3000:]
        log = agg.log()
    finally:
        for node in nodes:
            node.stop()
        agg.stop()
    assert "4 answers, threshold 5" in log
    assert "nothing of its sum is revealed" in log
    state = State(tmp_path / "agg.db")
    try:
        assert state.latest_central() is not None and state.latest_central()[0] == 1  # type: ignore[index]
        # the reopened round forgot the dropped group: a new seed, new joins, new groups
        assert state.db.execute("SELECT count(*) FROM secagg_groups").fetchone()[0] == 0
    finally:
        state.close()
