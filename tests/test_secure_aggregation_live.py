"""Issue 23 live: SecAgg+ over a real mosquitto running the TLS/ACL config ``provisioning``
generates, the real aggregator process with ``secure_aggregation`` on, 8 real node clients.

The central equals the plain mean of the updates within the documented quantization bound
(absolute, per weight), and nothing the aggregator received or stored recovers one node's
update: each masked upload is uncorrelated with its node's true update, no stored state decodes
to an update, and no update's bytes appear in what was received or stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from broker_aggregator.store import State
from edge_node.federation import FederationClient
from tests.support.mosquitto import mosquitto_binary
from tests.support.provisioning_mqtt import Fleet, start_fleet
from tests.support.secure_fleet import (  # noqa: F401 - fleet is a fixture
    LENGTH,
    NAMES,
    SPEC,
    TIMEOUT,
    Capture,
    assert_central_right,
    central_of,
    fleet,
    node_client,
    plain_mean,
    start_aggregator,
    submit,
)
from vfer.envelope import MAGIC, unpack
from vfer.secagg import SecAggParams, error_bound, flatten
from vfer.secagg.quantize import scale
from vfer.secagg.state import load
from vfer.secagg.wire import MaskedInputHeader

pytestmark = [
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed"),
    pytest.mark.slow,
]


def test_secure_round_central_is_the_mean_and_nothing_recovers_an_update(
    fleet: Fleet,  # noqa: F811
    tmp_path: Path,
) -> None:
    capture = Capture.start(fleet)
    agg = start_aggregator(fleet, tmp_path, len(NAMES))
    nodes: list[FederationClient] = [node_client(fleet, n, tmp_path) for n in NAMES]
    try:
        sent, moves = {}, {}
        for i, node in enumerate(nodes):
            weights, base = submit(node, seed=i)
            sent[node.node_id] = weights
            moves[node.node_id] = flatten(weights, SPEC) - flatten(base, SPEC)
        new = nodes[0].wait_central(timeout=TIMEOUT, newer_than=1)
        assert new is not None and new.version == 2, agg.log()[-3000:]
        log = agg.log()
    finally:
        for node in nodes:
            node.stop()
        agg.stop()
    assert "round 1 finished: central v2 from 8 submissions" in log, log[-3000:]
    assert_central_right(central_of(tmp_path), sent)
    received = capture.drain()
    capture.client.stop()
    uploads = [(t, p) for t, p in received if p.startswith(MAGIC)]
    assert len(uploads) == 8
    assert_uploads_uncorrelated(uploads, moves)
    assert_nothing_holds_an_update(tmp_path, received, sent, moves)


def assert_uploads_uncorrelated(
    uploads: list[tuple[str, bytes]], moves: dict[str, np.ndarray]
) -> None:
    for topic, payload in uploads:
        header, body = unpack(payload, MaskedInputHeader)
        assert header.length == LENGTH + 1 and len(body) == 4 * (LENGTH + 1)
        masked = np.frombuffer(body, dtype="<u4")[:-1].view(np.int32).astype(np.float64)
        node = topic.split("/")[2]
        r = float(np.corrcoef(masked, moves[node])[0, 1])
        assert abs(r) < 0.02, f"{node}: correlation {r}"


def assert_nothing_holds_an_update(
    tmp: Path,
    received: list[tuple[str, bytes]],
    sent: dict[str, dict[str, np.ndarray]],
    moves: dict[str, np.ndarray],
) -> None:
    """No received payload or stored byte holds an update's float32 bytes; no stored group state
    decodes to an update (its running sum is masked, its final sum is the group's)."""
    files = [p for p in tmp.glob("agg.db*") if p.is_file()]
    stored = b"".join(p.read_bytes() for p in files)
    wire = b"".join(p for _t, p in received)
    for node, w in sent.items():
        for probe in (flatten(w, SPEC), moves[node]):
            chunk = probe.astype(np.float32)[1000:1016].tobytes()
            assert chunk not in stored and chunk not in wire, node
    state = State(tmp / "agg.db")
    try:
        blobs = [bytes(r[0]) for r in state.db.execute("SELECT state FROM secagg_groups")]
    finally:
        state.close()
    assert blobs
    params = SecAggParams(vector_length=LENGTH)
    for blob in blobs:
        _s, total = load(blob)
        if total is None:
            continue
        decoded = total[:-1].view(np.int32).astype(np.float64) / scale(params)
        for node, move in moves.items():
            assert np.abs(decoded - move).max() > 1e3 * error_bound(params, 8, 8), node


@pytest.fixture
def fleet15(tmp_path: Path) -> Iterator[Fleet]:
    f = start_fleet(tmp_path, nodes=tuple(f"pi-{i}" for i in range(15)))
    try:
        yield f
    finally:
        f.broker.stop()


def test_a_robust_rule_runs_over_the_group_means(fleet15: Fleet, tmp_path: Path) -> None:
    """15 nodes in 3 groups of 5, ``rule: median``, one node shifting an output bias by 5
    (inside the clip): the central is base + the coordinate-wise median of the 3 group means."""
    agg = start_aggregator(fleet15, tmp_path, 15, min_group_size=5, rule="median")
    nodes = [node_client(fleet15, f"pi-{i}", tmp_path) for i in range(15)]
    try:
        moves, base = {}, None
        for i, node in enumerate(nodes):
            weights, base = submit(node, seed=i, shift={"v_out.bias": 5.0} if i == 0 else None)
            moves[node.node_id] = flatten(weights, SPEC) - flatten(base, SPEC)
        new = nodes[0].wait_central(timeout=TIMEOUT, newer_than=1)
        assert new is not None and new.version == 2, agg.log()[-3000:]
        log = agg.log()
    finally:
        for node in nodes:
            node.stop()
        agg.stop()
    assert "median over group means: {'rule': 'median'" in log, log[-3000:]
    state = State(tmp_path / "agg.db")
    try:
        groups = json.loads(state.db.execute("SELECT groups FROM secagg_rounds").fetchone()[0])
    finally:
        state.close()
    assert sorted(len(g) for g in groups) == [5, 5, 5]
    means = [np.mean([moves[n] for n in g], axis=0) for g in groups]
    assert base is not None
    want = flatten(base, SPEC) + np.median(means, axis=0)
    params = SecAggParams(min_group_size=5, vector_length=LENGTH)
    bound = error_bound(params, 5, 5) + np.spacing(np.abs(want).astype(np.float32))
    err = np.abs(central_of(tmp_path) - want)
    assert np.all(err <= bound), f"max error {err.max():.3g}"
