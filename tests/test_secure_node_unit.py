"""The node's side of a secure round (edge_node/federation/secure.py) without a broker: what it
publishes, and that hostile stage messages are refused and counted, never raised."""

from __future__ import annotations

import json

import numpy as np

from edge_node.federation.secure import Identity, SecureParticipant
from tests.support.aggregator import random_v
from vfer.envelope import sign_message, to_json
from vfer.heads_spec import vfer_spec
from vfer.messages import Personalization, RoundMsg
from vfer.secagg import SecAggParams, commit_seed, draw_groups, make_identity, new_seed, vouch
from vfer.secagg.wire import GroupsMsg, SecAggRound
from vfer.topics import Topics

T = Topics()
SPEC = vfer_spec(6)


def test_hostile_stage_messages_are_refused_and_the_real_one_answered() -> None:
    fleet, vouching, me = make_identity(), make_identity(), make_identity()
    identity = Identity(me, vouch(vouching, "pi-1", me.public_key()), vouching.public_key())
    sent: list[tuple[str, bytes]] = []
    node = SecureParticipant(
        "pi-1", identity, T, fleet.public_key(), lambda t, p: sent.append((t, p)) is None
    )
    seed = new_seed()
    length = sum(SPEC[n].size for n in random_v(6, np.random.default_rng(0)))
    info = SecAggRound(
        params=SecAggParams(min_group_size=5, vector_length=length),
        group_seed_commitment=commit_seed(1, seed),
    )
    rnd = RoundMsg(
        round_id=1, base_version=1, opened_at=0, deadline=1, min_submissions=5, max_submissions=5,
        classes=["anger", "disgust", "fear", "happiness", "neutral", "sadness"],
        personalization=Personalization(), secure_aggregation=info,
    )  # fmt: skip
    base = random_v(6, np.random.default_rng(0))
    moved = {n: a + 0.01 for n, a in base.items()}
    node.start(rnd, moved, base, SPEC, clips=3)
    assert [json.loads(p)["kind"] for _t, p in sent] == ["secagg_join"]
    groups = GroupsMsg(round_id=1, seed=seed.hex(), groups=draw_groups(
        ["pi-1", "pi-2", "pi-3", "pi-4", "pi-5"], seed, 5))  # fmt: skip
    for topic, payload in [
        (T.secagg_groups, b"garbage"),
        (T.secagg_groups, to_json(groups)),  # unsigned
        (T.secagg_groups, to_json(sign_message(groups, make_identity()))),  # not the fleet key
        (T.secagg_group(0, "keys"), b"{}"),
        (T.secagg_shares("pi-1"), b"\x00" * 100),
        (T.secagg_group(0, "nonsense"), b"{}"),  # not a stage: ignored
    ]:
        node.on_message(topic, payload)
    assert node.refused == {
        "bad_header": 2, "unsigned": 1, "bad_signature": 1, "schema_version": 1
    }  # fmt: skip
    assert len(sent) == 1  # nothing answered yet
    node.on_message(T.secagg_groups, to_json(sign_message(groups, fleet)))
    assert [json.loads(p)["kind"] for _t, p in sent] == ["secagg_join", "secagg_keys"]
    assert all(t == T.node_secagg("pi-1") for t, _p in sent)
