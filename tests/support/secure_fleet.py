"""A secure-aggregation round on a provisioned fleet: the real aggregator with a
``secure_aggregation`` section, real node clients from the generated node.yaml, a capture of
everything the aggregator receives, and a scripted node (a real NodeSession over MQTT with the
node's own login and identity) whose answers a test times and tampers with. For tests only.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge_node.config import load_node_config
from edge_node.federation import FederationClient, NodeUpdate
from edge_node.federation.secure import SecureParticipant
from tests.support.aggregator import AggregatorProcess, personalized, random_v, stored_central
from tests.support.provisioning_mqtt import Client, Fleet, start_fleet
from vfer import weights as wcodec
from vfer.envelope import MAGIC, from_json, pack, to_json
from vfer.heads_spec import trainable_names, vfer_spec
from vfer.messages import open_round
from vfer.secagg import (
    NodeSession,
    SecAggParams,
    error_bound,
    flatten,
    load_identity,
    load_voucher,
)
from vfer.secagg.wire import GroupsMsg, KeysBroadcast, SharesForYou, SurvivorsMsg, UnmaskRequest
from vfer.signing import load_public_key
from vfer.topics import Topics

TIMEOUT = 60.0
T = Topics()
SPEC = vfer_spec(6)


def start_aggregator(
    fleet: Fleet, tmp: Path, n: int, *, stage_s: float = 600, rule: str = "mean", **secure: Any
) -> AggregatorProcess:
    """The real aggregator with the generated aggregator.yaml, secure aggregation on."""
    initial = tmp / "vfer_head.safetensors"
    if not initial.exists():
        wcodec.save(initial, random_v(6, np.random.default_rng(0), trainable_only=False))
    data = yaml.safe_load((fleet.dir / "aggregator" / "aggregator.yaml").read_text())
    vouching = fleet.dir / "aggregator" / "vouching_public_key.pem"
    data |= {
        "state_db": str(tmp / "agg.db"),
        "rule": rule,
        "initial_weights": str(initial),
        "round": {"min_submissions": n, "max_submissions": n, "rounds": 1, "deadline_s": 600},
        "secure_aggregation": {"vouching_public_key": str(vouching), "stage_s": stage_s, **secure},
    }
    cfg = tmp / "aggregator-test.yaml"
    cfg.write_text(yaml.safe_dump(data))
    return AggregatorProcess(["--config", str(cfg)], tmp / "agg.log").start()


def node_client(fleet: Fleet, name: str, tmp: Path) -> FederationClient:
    settings = load_node_config(fleet.dir / "nodes" / name / "node.yaml").federation
    return FederationClient(name, settings, tmp / f"outbox-{name}.db").start()


def submit(
    node: FederationClient, seed: int, shift: dict[str, float] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Personalize from the node's central (``shift`` adds to whole arrays) and submit;
    returns (what it sent, its base)."""
    rnd = node.wait_round(timeout=TIMEOUT)
    central = node.wait_central(timeout=TIMEOUT)
    assert rnd is not None and central is not None, f"{node.node_id} saw no round or central"
    assert rnd.secure_aggregation is not None, "the round is not secure"
    weights = personalized(central.weights, np.random.default_rng(seed))
    for name, by in (shift or {}).items():
        weights[name] = (weights[name] + by).astype(np.float32)
    node.submit(NodeUpdate(rnd.round_id, rnd.base_version, weights, {"anger": 2}))
    return weights, central.weights


@dataclass
class Capture:
    """Everything published on ``<prefix>/nodes/+/secagg`` (what the aggregator receives)."""

    client: Client
    seen: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def start(cls, fleet: Fleet) -> Capture:
        c = cls(fleet.aggregator(client_id="test-capture"))
        assert c.client.connect_rc == 0
        c.client.subscribe(T.all_secagg)
        return c

    def drain(self) -> list[tuple[str, bytes]]:
        while True:
            try:
                self.seen.append(self.client.messages.get_nowait())
            except queue.Empty:
                return self.seen

    def of_kind(self, kind: str) -> list[tuple[str, bytes]]:
        return [(t, p) for t, p in self.drain() if _kind(p) == kind]

    def wait_kind(self, kind: str, count: int, timeout: float = TIMEOUT) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while len(got := self.of_kind(kind)) < count:
            assert time.monotonic() < deadline, f"only {len(got)} {kind} messages"
            time.sleep(0.05)
        return got


def _kind(payload: bytes) -> str:
    import json

    if payload.startswith(MAGIC):
        payload = payload[8 : 8 + int.from_bytes(payload[4:8], "big")]
    try:
        return str(json.loads(payload).get("kind"))
    except ValueError:
        return "?"


class Lossy(SecureParticipant):
    """A node client's secure side that goes silent from the answer of kind ``lost_at`` on (a
    node lost mid-round): swapped in with ``node.secure.__class__ = Lossy``."""

    lost_at = "secagg_masked"
    silent = False

    def _answer(self, payload: bytes) -> None:
        if _kind(payload) == self.lost_at:
            self.silent = True
        if not self.silent:
            super()._answer(payload)


class ScriptedNode:
    """A real NodeSession with a node's own login and identity, stage by stage by the test."""

    def __init__(self, fleet: Fleet, name: str, update_of: Callable[..., np.ndarray]) -> None:
        self.name, self.fleet = name, fleet
        self.folder = fleet.dir / "nodes" / name
        self.identity = load_identity(self.folder / "identity_key.pem")
        self.voucher = load_voucher(self.folder / "identity_voucher.json")
        self.vouching = load_public_key(self.folder / "vouching_public_key.pem")
        self.client = fleet.node(name)
        assert self.client.connect_rc == 0
        self.client.subscribe(T.round, T.secagg_groups, T.all_secagg_groups, T.secagg_shares(name))
        self.update_of = update_of
        self.session: NodeSession | None = None
        self.inbox: dict[str, bytes] = {}

    def join(self, round_id: int) -> None:
        raw = self.wait(T.round)
        rnd = open_round(raw, load_public_key(self.folder / "fleet_public_key.pem"))
        assert rnd.secure_aggregation is not None
        self.session = NodeSession(
            node_id=self.name, round_id=round_id, round_info=rnd.secure_aggregation,
            identity=self.identity, voucher=self.voucher, vouching_public=self.vouching,
            update=self.update_of(),
        )  # fmt: skip
        self.send(to_json(self.session.join()))

    def wait(self, topic_end: str, timeout: float = TIMEOUT) -> bytes:
        """The newest message on a topic ending with ``topic_end`` (others are kept)."""
        deadline = time.monotonic() + timeout
        while True:
            for topic in list(self.inbox):
                if topic.endswith(topic_end):
                    return self.inbox.pop(topic)
            left = deadline - time.monotonic()
            assert left > 0, f"{self.name}: nothing on *{topic_end}"
            try:
                topic, payload = self.client.next_message(timeout=left)
            except queue.Empty:
                continue
            if self._current(payload):
                self.inbox[topic] = payload

    def _current(self, payload: bytes) -> bool:
        """Not another round's retained message."""
        import json

        if self.session is None:
            return True
        return json.loads(payload).get("round_id") == self.session.round_id

    def send(self, payload: bytes) -> None:
        assert self.client.publish(T.node_secagg(self.name), payload) < 128

    # the stages: the message this node answers, decoded
    def groups(self) -> GroupsMsg:
        return from_json(self.wait("/secagg/groups"), GroupsMsg)

    def keys(self) -> KeysBroadcast:
        return from_json(self.wait("/keys"), KeysBroadcast)

    def shares(self) -> SharesForYou:
        return from_json(self.wait(f"/nodes/{self.name}/shares"), SharesForYou)

    def survivors(self) -> SurvivorsMsg:
        return from_json(self.wait("/survivors"), SurvivorsMsg)

    def unmask(self) -> UnmaskRequest:
        return from_json(self.wait("/unmask"), UnmaskRequest)

    def masked(self, msg: SharesForYou) -> bytes:
        assert self.session is not None
        return pack(*self.session.on_shares(msg))

    def stop(self) -> None:
        self.client.stop()


# the live tests' fleet and checks (tests/test_secure_aggregation_*.py) ---------------------
NAMES = tuple(f"pi-{i}" for i in range(8))
LENGTH = sum(SPEC[n].size for n in trainable_names(SPEC))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = start_fleet(tmp_path, nodes=(*NAMES, "mallory"))  # mallory: a login outside the round
    try:
        yield f
    finally:
        f.broker.stop()


def plain_mean(sent: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    return np.mean([flatten(w, SPEC) for w in sent.values()], axis=0)


def central_of(tmp: Path) -> np.ndarray:

    return flatten(stored_central(tmp / "agg.db", 2)[1], SPEC)


def assert_central_right(central: np.ndarray, sent: dict[str, dict[str, np.ndarray]]) -> None:
    """|central - plain mean| <= the quantization bound + float32 rounding of the central."""
    params = SecAggParams(vector_length=LENGTH)
    want = plain_mean(sent)
    bound = error_bound(params, len(sent), len(sent)) + np.spacing(np.abs(want).astype(np.float32))
    err = np.abs(central - want)
    assert np.all(err <= bound), f"max error {err.max():.3g}, bound {bound.max():.3g}"
