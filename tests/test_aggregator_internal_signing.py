"""The aggregator's own messages are signed: a stolen broker login alone cannot steer a central.

Every aggregator process holds the fleet key (``signing_key_file`` is required unless
``insecure_unsigned``), so progress, close and partial messages are signed with it as the round
and the central are, and every receiver verifies them. A client with the aggregator's broker login
but not the key used to be able to report a made-up update from a made-up worker and answer the
close with sums of its choosing, which the leader merged into the central it then signed; and
an unsigned round marked finished made an extra worker drop the update bodies it held.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from broker_aggregator.intake import Intake, PartialEvent
from broker_aggregator.service import control_topics
from broker_aggregator.store import State
from broker_aggregator.validate import Expectations
from tests.support.aggregator import (
    AggregatorProcess,
    fleet_config,
    personalized,
    trainable_weights,
)
from tests.support.mosquitto import Broker
from tests.support.raw_node import RawNode, subscriptions, update_frame, wait_subscribed
from tests.test_federation_e2e import broker, fleet  # noqa: F401
from vfer import signing
from vfer import weights as wcodec
from vfer.classes import EMOTIONS_6
from vfer.heads_spec import vfer_spec
from vfer.messages import (
    CloseMsg,
    PartialHeader,
    Personalization,
    ProgressMsg,
    RoundMsg,
    open_central,
    pack_signed,
    sign_message,
    to_json,
)
from vfer.topics import Topics

TOPICS = Topics("fedvfer")
CONTROL = control_topics(TOPICS)
SPEC = vfer_spec(6)


def messages() -> dict[str, object]:
    """One of each message the aggregator reads from its own kind, unsigned."""
    rng = np.random.default_rng(3)
    sums = {n: rng.normal(size=s.shape).astype(np.float64) for n, s in SPEC.items() if s.trainable}
    return {
        "progress": ProgressMsg(
            node_id="pi-1", worker_id="agg-2", round_id=1, seq=1, update_id="pi-1-update-1"
        ),
        "close": CloseMsg(round_id=1, assignments={"agg-2": {"pi-1": 1}}),
        "partial": (
            PartialHeader(worker_id="agg-2", round_id=1, nodes={"pi-1": 1}, total_weight=1.0),
            wcodec.to_bytes(sums),
        ),
        "round": RoundMsg(
            round_id=99,
            base_version=1,
            state="finished",
            opened_at=0.0,
            deadline=1.0,
            min_submissions=1,
            max_submissions=1,
            classes=list(EMOTIONS_6),
            personalization=Personalization(),
        ),
    }


def payload(kind: str, msg: object, key: Ed25519PrivateKey | None) -> bytes:
    if kind == "partial":
        header, body = msg  # type: ignore[misc]
        return pack_signed(header, body, key)
    return to_json(sign_message(msg, key))  # type: ignore[type-var]


def no_updates() -> Expectations:
    raise AssertionError("only control messages here")


def topic(kind: str) -> str:
    return TOPICS.round if kind == "round" else CONTROL[kind]


@pytest.mark.parametrize("kind", ["progress", "close", "partial", "round"])
def test_only_messages_signed_with_the_fleet_key_are_heard(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    fleet_key, other_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    intake = Intake(TOPICS, CONTROL, SPEC, fleet_key.public_key(), False, no_updates)
    msg = messages()[kind]
    with caplog.at_level(logging.WARNING):
        intake.on_message(topic(kind), payload(kind, msg, None))  # the login alone
        intake.on_message(topic(kind), payload(kind, msg, other_key))  # another key
    assert intake.events.empty()
    assert "unsigned" in caplog.text and "bad_signature" in caplog.text
    intake.on_message(topic(kind), payload(kind, msg, fleet_key))
    event = intake.events.get_nowait()
    got = event.header if isinstance(event, PartialEvent) else event
    want = msg[0] if isinstance(msg, tuple) else msg
    assert got.model_dump(exclude={"signature", "body_size", "body_sha256"}) == want.model_dump(  # type: ignore[attr-defined]
        exclude={"signature", "body_size", "body_sha256"}
    )
    # a signed message changed on the way fails too (the signature covers every field)
    tampered = payload(kind, msg, fleet_key).replace(b'"round_id":', b'"round_id":1', 1)
    intake.on_message(topic(kind), tampered)
    assert intake.events.empty()


@pytest.mark.parametrize("kind", ["progress", "close", "partial", "round"])
def test_a_dev_setup_without_a_key_still_hears_unsigned_messages(kind: str) -> None:
    intake = Intake(TOPICS, CONTROL, SPEC, None, True, no_updates)  # insecure_unsigned
    intake.on_message(topic(kind), payload(kind, messages()[kind], None))
    assert not intake.events.empty()


@pytest.mark.slow
def test_a_thief_with_the_aggregator_login_but_not_the_key_is_not_heard(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The attack that used to steer the central: a made-up update from a made-up worker, then
    its partial sums. One honest node."""
    cfg = fleet_config(
        tmp_path,
        broker.url,
        fleet,
        "round: {min_submissions: 1, max_submissions: 2, rounds: 1, deadline_s: 8}\n",
    )
    base = trainable_weights(fleet["initial"])
    rng = np.random.default_rng(8)
    thief = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="thief", protocol=mqtt.MQTTv5)
    thief.connect("127.0.0.1", broker.port, clean_start=True)
    thief.loop_start()
    honest = RawNode(broker, "pi-0")
    before = subscriptions(broker)
    agg = AggregatorProcess(["--config", str(cfg)], tmp_path / "agg.log").start()
    try:
        assert wait_subscribed(broker, before), agg.log()[-2000:]
        claim = ProgressMsg(
            node_id="pi-x", worker_id="agg-2", round_id=1, seq=1, update_id=uuid.uuid4().hex
        )
        evil = {n: a.astype(np.float64) * 50 for n, a in personalized(base, rng).items()}
        partial = PartialHeader(worker_id="agg-2", round_id=1, nodes={"pi-x": 1}, total_weight=1)
        for t, p in (
            (CONTROL["progress"], to_json(claim)),
            (CONTROL["partial"], pack_signed(partial, wcodec.to_bytes(evil), None)),
        ):
            thief.publish(t, p, 1).wait_for_publish(10)
        uid = uuid.uuid4().hex
        mine = personalized(base, rng)
        honest.publish(update_frame("pi-0", 1, 1, 1, mine, uid))
        ack = honest.wait_ack(uid)
        assert ack is not None and ack.status == "stored", agg.log()[-2000:]
        # the forged claim would have made two submissions (the maximum) and closed the round
        # at once, waiting for agg-2's sums; alone, the honest update closes it at the deadline
        assert agg.wait(timeout=60) == 0, agg.log()[-2000:]
    finally:
        thief.loop_stop()
        thief.disconnect()
        honest.stop()
        agg.stop()
    log = agg.log()
    assert "progress from worker 'agg-2' carries no signature" in log, log[-3000:]
    assert "partial sums of worker 'agg-2' carries no signature" in log, log[-3000:]
    state = State(tmp_path / "agg.db")
    try:
        latest = state.latest_central()
        n = state.db.execute("SELECT num_submissions FROM rounds WHERE round_id=1").fetchone()[0]
    finally:
        state.close()
    assert latest is not None and latest[0] == 2 and n == 1
    _, body = open_central(latest[1], signing.load_public_key(fleet["pub"]))
    central = wcodec.from_bytes(body)
    for name, w in mine.items():  # FedAvg of the honest update alone
        np.testing.assert_allclose(central[name], w, rtol=1e-6, atol=1e-7)
