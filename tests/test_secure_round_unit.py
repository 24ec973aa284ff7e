"""The leader's secure-round loop (broker_aggregator/secure_round.py) without a broker: real
NodeSessions answer what it publishes, a real state database holds its groups. Garbage on a
node's secagg topic never raises, a stage closes at its deadline without the silent, a loop
read back from the database after any stage finishes the round, and the group means reach the
rule as the oracle says."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from broker_aggregator.closing import Columns, Summed
from broker_aggregator.secure_config import SecureAggregationConfig
from broker_aggregator.secure_gather import group_contributions
from broker_aggregator.secure_keys import Keys
from broker_aggregator.secure_round import SecureRound
from broker_aggregator.secure_store import SecureStore
from broker_aggregator.store import State
from vfer import signing
from vfer.config_io import ConfigError
from vfer.envelope import MAGIC, from_json, pack, to_json
from vfer.heads_spec import WeightSpec
from vfer.secagg import NodeSession, fingerprint, make_identity, revoke, vouch
from vfer.secagg.unmask import GroupResult
from vfer.secagg.wire import GroupsMsg, KeysBroadcast, SharesForYou, SurvivorsMsg, UnmaskRequest
from vfer.topics import Topics

N, L = 6, 50
T = Topics()
LEAF = {"keys": (KeysBroadcast, "on_keys"), "survivors": (SurvivorsMsg, "on_survivors"),
        "unmask": (UnmaskRequest, "on_unmask")}  # fmt: skip


class Fleet:
    def __init__(self, tmp: Path, *, silent: tuple[str, ...] = ()) -> None:
        self.state = State(tmp / "agg.db")
        self.fleet_key, self.vouching = make_identity(), make_identity()
        self.keys = Keys(self.fleet_key, self.vouching.public_key())
        self.cfg = SecureAggregationConfig(
            vouching_public_key=tmp / "unused.pem", min_group_size=5, stage_s=10
        )
        self.ids = [f"pi-{i}" for i in range(N)]
        rng = np.random.default_rng(0)
        self.updates = {n: rng.normal(0, 0.02, L) for n in self.ids}
        self.silent = set(silent)
        self.rnd = self.open()
        self.sessions = {n: self._session(n) for n in self.ids}

    def open(self) -> SecureRound:
        return SecureRound.open(1, self.cfg, L, SecureStore(self.state.db), T, self.keys)

    def _session(self, nid: str) -> NodeSession:
        ident = make_identity()
        return NodeSession(
            node_id=nid, round_id=1, round_info=self.rnd.round_info(), identity=ident,
            voucher=vouch(self.vouching, nid, ident.public_key()),
            vouching_public=self.vouching.public_key(), update=self.updates[nid],
        )  # fmt: skip

    def deliver(self, published: list[Any]) -> None:
        """Every published stage message to its nodes; their answers back to the loop."""
        for pub in published:
            for nid, answer in self._answers(pub.topic, pub.payload):
                if nid not in self.silent:
                    self.rnd.on_message(nid, answer)

    def _answers(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        parts = topic.split("/")
        if topic == T.secagg_groups:
            msg, method, who = from_json(payload, GroupsMsg), "on_groups", self.ids
        elif parts[1:3] == ["secagg", "nodes"]:
            msg, method, who = from_json(payload, SharesForYou), "on_shares", [parts[3]]
        else:
            model, method = LEAF[parts[-1]]
            msg, who = from_json(payload, model), json.loads(payload).get("survivors") or self.ids
        out = []
        for nid in who:
            try:
                got = getattr(self.sessions[nid], method)(msg)
            except ValueError:
                continue  # not in this group
            out.append((nid, pack(*got) if isinstance(got, tuple) else to_json(got)))
        return out

    def run(self, now: float = 0.0, restart_after: int = -1) -> SecureRound:
        for nid in self.ids:  # the silent ones too: they fall silent after joining
            self.rnd.on_message(nid, to_json(self.sessions[nid].join()))
        self.deliver(self.rnd.draw())
        for step in range(8):
            if step == restart_after:
                self.rnd = self.open()
                self.deliver(self.rnd.republish())
            self.deliver(self.rnd.step(now))
            if self.rnd.done:
                break
        return self.rnd


GARBAGE = [b"", b"\x00" * 10, b"{", b'{"kind":"secagg_keys"}', MAGIC + b"\xff" * 20,
           b'{"kind":"secagg_join","round_id":1}', "ü".encode("utf-16"), b"[1,2]", b"null"]  # fmt: skip


def test_garbage_never_raises_and_the_round_is_still_right(tmp_path: Path) -> None:
    f = Fleet(tmp_path)
    for payload in GARBAGE:
        f.rnd.on_message("pi-0", payload)  # before the draw: a join
    f.rnd.on_message("pi-9", to_json(f.sessions["pi-0"].join()))  # forged_node_id
    f.rnd.on_message("pi-0", to_json(f.sessions["pi-0"].join()))
    f.rnd.draw()
    for payload in GARBAGE:
        f.rnd.on_message("pi-1", payload)  # after it: a stage message
    assert f.rnd.refusals["forged_node_id"] == 1 and sum(f.rnd.refusals.values()) >= 2 * len(
        GARBAGE
    )
    f = Fleet(tmp_path / "again")
    rnd = f.run()
    (result,) = rnd.finished_groups()
    assert result.survivors == f.ids
    want = np.mean([f.updates[n] for n in f.ids], axis=0)
    assert np.abs(result.mean - want).max() <= result.error_bound + 1e-12


@pytest.mark.parametrize("restart_after", [0, 1, 2, 3, 4])
def test_a_loop_read_back_after_any_stage_finishes_the_round(
    tmp_path: Path, restart_after: int
) -> None:
    f = Fleet(tmp_path)
    rnd = f.run(restart_after=restart_after)
    assert rnd.done and [r.survivors for r in rnd.finished_groups()] == [f.ids]
    # the answers nodes sent again to the republished stage message are no refusals
    assert not rnd.refusals and all(not a.refusals for a in rnd.aggs.values())


def test_the_deadline_closes_a_stage_without_the_silent(tmp_path: Path) -> None:
    f = Fleet(tmp_path, silent=("pi-5",))
    rnd = f.run()
    assert not rnd.done  # waiting for pi-5's keys, the deadline not reached
    f.deliver(rnd.step(now=1e12))  # stage_s later
    for _ in range(6):
        f.deliver(rnd.step(now=1e12))
    (result,) = rnd.finished_groups()
    assert "pi-5" not in result.survivors and len(result.survivors) == N - 1


def test_group_means_reach_the_rule_as_the_oracle_says() -> None:
    spec = {"a": WeightSpec((2, 3), True), "b": WeightSpec((4,), True)}
    rng = np.random.default_rng(1)
    base = {"a": rng.normal(size=(2, 3)).astype(np.float32), "b": np.zeros(4, np.float32)}
    means = [rng.normal(size=10) for _ in range(3)]
    results = [
        GroupResult(1, g, [f"n{g}{i}" for i in range(g + 5)], [], np.zeros(11, np.uint32), m,
                    g + 5, 1e-7)
        for g, m in enumerate(means)
    ]  # fmt: skip
    flat_base = np.concatenate([base["a"].reshape(-1), base["b"]]).astype(np.float64)
    summed = group_contributions(results, base, spec, "mean")
    assert isinstance(summed, Summed)
    got = summed.total.mean("float64")
    want = flat_base + np.average(means, axis=0, weights=[5, 6, 7])
    assert np.allclose(np.concatenate([got["a"].reshape(-1), got["b"]]), want)
    cols = group_contributions(results, base, spec, "median")
    assert isinstance(cols, Columns) and cols.nodes == ("group-0", "group-1", "group-2")
    with cols.open() as read:
        block = read("a", 0, 6)
    assert np.allclose(block, np.stack([flat_base[:6] + m[:6] for m in means]))


def test_revocations_are_checked_at_start_and_never_lost(tmp_path: Path) -> None:
    vouching_key = make_identity()
    pub = tmp_path / "vouching_public_key.pem"
    pub.write_bytes(signing.public_pem(vouching_key.public_key()))
    listed = tmp_path / "revocations.json"
    cfg = SecureAggregationConfig(vouching_public_key=pub, revocations_file=listed)
    listed.write_text("{not json")
    with pytest.raises(ConfigError, match="revocations_file"):
        Keys.load(cfg, None)
    victim = vouch(vouching_key, "pi-1", make_identity().public_key())
    listed.write_bytes(to_json(revoke(vouching_key, None, victim)))
    keys = Keys.load(cfg, None)
    assert keys.revoked() == {fingerprint(base64.b64decode(victim.identity_key))}
    listed.write_text("garbage")  # unreadable later: the last good list stays
    assert len(keys.revoked()) == 1
