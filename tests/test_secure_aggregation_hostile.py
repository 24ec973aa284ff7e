"""Issue 23 live, hostile input: 7 real node clients and one scripted node (a real NodeSession
with pi-7's own login and identity, driven stage by stage by the test) on the provisioned
TLS/ACL fleet. Before each honest answer the scripted node sends something hostile: another
node's key advertisement replayed as its own, its own keys signed for another round, shares
missing a peer, a masked vector one value short, a revealed share that fails its commitment.
An active aggregator (the fleet key and the aggregator's login) asks the honest nodes for both
shares of one peer, and a stolen node login tries another node's topic. Each is refused and
counted, and the round completes with the central right.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import numpy as np
import pytest

from edge_node.federation import FederationClient
from tests.support.aggregator import personalized, trainable_weights
from tests.support.mosquitto import mosquitto_binary
from tests.support.provisioning_mqtt import Fleet
from tests.support.secure_fleet import (  # noqa: F401 - fleet is a fixture
    NAMES,
    SPEC,
    TIMEOUT,
    Capture,
    ScriptedNode,
    T,
    assert_central_right,
    central_of,
    fleet,
    node_client,
    start_aggregator,
    submit,
)
from vfer import signing
from vfer.envelope import from_json, pack, sign_message, to_json
from vfer.secagg import flatten
from vfer.secagg.wire import AdvertiseKeys, ConsistencySig, MaskedInputHeader, UnmaskRequest

pytestmark = [
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed"),
    pytest.mark.slow,
]
NOT_AUTHORIZED = 135


def wait_refused(nodes: list[FederationClient], reason: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not all(n.secure is not None and n.secure.refused.get(reason) for n in nodes):
        assert time.monotonic() < deadline, [n.secure and n.secure.refused for n in nodes]
        time.sleep(0.05)


def test_hostile_messages_are_refused_and_the_round_completes(
    fleet: Fleet,  # noqa: F811
    tmp_path: Path,
) -> None:
    capture = Capture.start(fleet)
    agg = start_aggregator(fleet, tmp_path, len(NAMES))
    honest = [node_client(fleet, n, tmp_path) for n in NAMES[:-1]]
    base = trainable_weights(tmp_path / "vfer_head.safetensors")
    mine = personalized(base, np.random.default_rng(99))
    s = ScriptedNode(fleet, NAMES[-1], lambda: flatten(mine, SPEC) - flatten(base, SPEC))
    thief = fleet.node("mallory")  # a stolen node login
    active = fleet.aggregator(client_id="test-active-aggregator")  # with the fleet key below
    fleet_key = signing.load_private_key(fleet.dir / "aggregator" / "signing_key.pem")
    try:
        sent = {n.node_id: submit(n, seed=i)[0] for i, n in enumerate(honest)}
        sent[s.name] = mine
        s.join(round_id=1)
        advert = s.session.on_groups(s.groups())  # type: ignore[union-attr]
        # a stolen node login cannot write another node's secagg topic (the broker's ACL)
        assert thief.publish(T.node_secagg("pi-0"), to_json(advert)) == NOT_AUTHORIZED
        # another node's advertisement replayed as pi-7's, pi-7's keys signed for round 99
        _t, other = capture.wait_kind("secagg_keys", 1)[0]
        s.send(other)
        s.send(to_json(sign_message(advert.model_copy(update={"round_id": 99}), s.identity)))
        s.send(to_json(advert))
        shares = s.session.on_keys(s.keys())  # type: ignore[union-attr]
        short = dict(list(shares.shares.items())[1:])  # one peer left out
        s.send(to_json(shares.model_copy(update={"shares": short})))
        s.send(to_json(shares))
        frame = s.masked(s.shares())
        header = MaskedInputHeader(
            round_id=1, group_id=0, node_id=s.name, length=len(flatten(mine, SPEC)),
            modulus_bits=32,
        )  # fmt: skip
        s.send(pack(header, bytes(4 * header.length)))  # one value short: wrong_length
        wide = header.model_copy(update={"length": header.length + 1, "modulus_bits": 64})
        s.send(pack(wide, bytes(4 * wide.length)))  # the right length, another modulus
        s.send(frame)
        survivors = s.survivors()
        sig = s.session.on_survivors(survivors)  # type: ignore[union-attr]
        # an active aggregator asks the honest nodes for both shares of pi-0
        sigs = [
            from_json(p, ConsistencySig) for _t, p in capture.wait_kind("secagg_consistency", 7)
        ]
        greedy = UnmaskRequest(
            round_id=1, group_id=0, survivors=survivors.survivors, signatures=sigs,
            reveal_seed_of=survivors.survivors, reveal_key_of=["pi-0"],
        )  # fmt: skip
        assert (
            active.publish(T.secagg_group(0, "unmask"), to_json(sign_message(greedy, fleet_key)))
            < 128
        )
        wait_refused(honest, "both_shares")
        assert not capture.of_kind("secagg_revealed"), "a node revealed shares to the forgery"
        s.wait("/unmask")  # the forgery, as pi-7 received it
        s.send(to_json(sig))
        reveal = s.session.on_unmask(s.unmask())  # type: ignore[union-attr]
        peer, share = next(iter(reveal.seed_shares.items()))
        raw = bytearray(base64.b64decode(share))
        raw[-1] ^= 1
        bad = {**reveal.seed_shares, peer: base64.b64encode(bytes(raw)).decode()}
        s.send(to_json(reveal.model_copy(update={"seed_shares": bad})))  # fails its commitment
        new = honest[0].wait_central(timeout=TIMEOUT, newer_than=1)
        assert new is not None and new.version == 2, agg.log()[-3000:]
        log = agg.log()
    finally:
        for node in honest:
            node.stop()
        for c in (s, capture.client, thief, active):
            c.stop()
        agg.stop()
    reasons = (
        "forged_node_id",
        "replayed_keys",
        "malformed_shares",
        "wrong_modulus",
        "wrong_length",
    )
    for reason in reasons:
        assert f"from pi-7: reason={reason}" in log, reason
    counted = (
        "{'forged_node_id': 1, 'malformed_shares': 1, 'replayed_keys': 1, 'wrong_length': 1, "
        "'wrong_modulus': 1, "
    )
    assert f"group 0 refused: {counted}'wrong_share': 1}}" in log, log[-3000:]
    assert "round 1 finished: central v2 from 8 submissions" in log
    assert_central_right(central_of(tmp_path), sent)
    assert isinstance(advert, AdvertiseKeys)
