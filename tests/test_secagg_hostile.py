"""Hostile input to a secure round: each refused with its named reason, counted, and the group
completes for the honest nodes with the right sum (tests/support/secagg.py runs the round)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.secagg import Harness
from tests.test_secagg_protocol import assert_mean_right, harness
from vfer.envelope import from_json, sign_message
from vfer.secagg import GroupResult, SecAggError
from vfer.secagg import identity as ident
from vfer.secagg import primitives as p
from vfer.secagg.wire import (
    AdvertiseKeys,
    ConsistencySig,
    GroupsMsg,
    MaskedInputHeader,
    ShareKeys,
    SurvivorsMsg,
    UnmaskRequest,
    UnmaskShares,
    check_join,
)


def only(h: Harness, results: dict[int, Any]) -> GroupResult:
    (r,) = results.values()
    assert isinstance(r, GroupResult), r
    return r


def refused(h: Harness) -> dict[str, int]:
    return dict(h.aggs[0].refusals)


def revealed(h: Harness) -> list[UnmaskShares]:
    return [from_json(raw, UnmaskShares) for raw in h.seen if b'"secagg_revealed"' in raw]


def resign(h: Harness, node: str, msg: Any, **changes: Any) -> Any:
    return sign_message(msg.model_copy(update=changes), h.identities[node])


# -- key advertisements ---------------------------------------------------------------------------


def test_keys_replayed_from_another_round_or_group_or_node() -> None:
    h = harness()
    x, y, z = h.ids[1], h.ids[2], h.ids[3]

    def hostile(stage: str, node: str, out: Any) -> Any:
        if stage != "keys":
            return out
        if node == x:  # validly signed by x, but for round 2 / group 5: a replay
            return [resign(h, x, out, round_id=2), resign(h, x, out, group_id=5), out]
        if node == y:  # y's own keys, then z's keys from y's topic, as is and relabelled as y's
            theirs = h.sessions[z].on_groups(h.groups_msg)
            return [out, theirs, theirs.model_copy(update={"node_id": y})]
        return out

    r = only(h, h.run(tamper=hostile))
    assert_mean_right(h, r, h.ids)
    assert refused(h) == {"replayed_keys": 2, "forged_node_id": 2}


def test_keys_with_bad_signature_or_low_order_point_are_refused() -> None:
    h = harness()
    x, y = h.ids[0], h.ids[1]
    low_order = p.b64(bytes(32))  # the X25519 point of order 1

    def hostile(stage: str, node: str, out: Any) -> Any:
        if stage == "keys" and node == x:
            return [out.model_copy(update={"mask_key": p.b64(bytes([9]) + bytes(31))})]
        if stage == "keys" and node == y:
            return [resign(h, y, out, share_key=low_order)]
        return out

    r = only(h, h.run(tamper=hostile))
    assert_mean_right(h, r, [n for n in h.ids if n not in (x, y)])
    assert refused(h) == {"bad_signature": 1, "bad_key": 1}
    assert h.aggs[0].state.u1 == sorted(set(h.ids) - {x, y})


# -- shares ---------------------------------------------------------------------------------------


def test_malformed_shares_are_refused_and_the_sender_counts_as_lost() -> None:
    h = harness()
    x, y = h.ids[2], h.ids[6]

    def hostile(stage: str, node: str, out: Any) -> Any:
        if stage == "shares" and node == x:
            missing = dict(list(out.shares.items())[1:])
            return [out.model_copy(update={"shares": missing})]
        if stage == "shares" and node == y:
            first = next(iter(out.shares))
            bad = [p.b64(bytes(149)), "!" * 200]  # the right length of text, not of bytes
            sealed = [out.shares[first].model_copy(update={"ciphertext": c}) for c in bad]
            return [out.model_copy(update={"shares": {**out.shares, first: c}}) for c in sealed] + [
                out
            ]
        return out

    r = only(h, h.run(tamper=hostile))
    assert_mean_right(h, r, [n for n in h.ids if n != x])  # y's honest copy came second
    assert refused(h) == {"malformed_shares": 3}


def test_a_share_altered_on_the_way_is_refused_by_its_receiver() -> None:
    h = harness()
    x, y = h.ids[0], h.ids[4]

    def hostile(stage: str, node: str, out: ShareKeys) -> Any:
        if stage == "shares" and node == x:
            raw = bytearray(p.unb64(out.shares[y].ciphertext))
            raw[10] ^= 1
            bad = out.shares[y].model_copy(update={"ciphertext": p.b64(bytes(raw))})
            return out.model_copy(update={"shares": {**out.shares, y: bad}})
        return out

    r = only(h, h.run(tamper=hostile))
    assert_mean_right(h, r, h.ids)  # x's seed is rebuilt from the other holders
    assert h.sessions[y].refusals["bad_share"] == 1
    (from_y,) = [m for m in revealed(h) if m.node_id == y]
    assert x not in from_y.seed_shares and len(from_y.seed_shares) == 7  # y holds no share of x


def test_wrong_and_malformed_revealed_shares_are_refused_one_by_one() -> None:
    h = harness()
    x = h.ids[3]

    def hostile(stage: str, node: str, out: UnmaskShares) -> Any:
        if stage == "unmask" and node == x:
            owners = sorted(out.seed_shares)
            seeds = dict(out.seed_shares)
            seeds[owners[0]] = out.seed_shares[owners[1]]  # a share, of someone else
            seeds[owners[2]] = p.b64(b"\x01" * 10)
            return out.model_copy(update={"seed_shares": seeds})
        return out

    r = only(h, h.run(tamper=hostile))
    assert_mean_right(h, r, h.ids)
    assert refused(h) == {"wrong_share": 1, "malformed_share": 1}
    kept = h.aggs[0].state  # finished: revealed shares are dropped with the secrets rebuilt
    assert kept.stage == "done" and kept.revealed == {}


def test_a_node_revealing_both_shares_of_a_peer_is_refused() -> None:
    h = harness()
    lost, x = h.ids[0], h.ids[5]

    def hostile(stage: str, node: str, out: UnmaskShares) -> Any:
        if stage == "unmask" and node == x:
            both = {**out.seed_shares, lost: next(iter(out.key_shares.values()))}
            return [out.model_copy(update={"seed_shares": both}), out]
        return out

    r = only(h, h.run(drop={"masked": [lost]}, tamper=hostile))
    assert_mean_right(h, r, h.ids[1:])
    assert refused(h) == {"both_shares": 1}


# -- requests from a hostile aggregator, refused by the node ------------------------------------


def test_a_request_for_both_shares_of_a_peer_is_refused_by_the_node() -> None:
    h = harness()
    lost, x = h.ids[0], h.ids[5]
    caught: list[str] = []

    def hostile(stage: str, node: str, msg: UnmaskRequest) -> Any:
        if stage == "unmask" and node == x:
            survivor = msg.survivors[0]
            for bad in (
                msg.model_copy(update={"reveal_seed_of": [*msg.reveal_seed_of, lost]}),
                msg.model_copy(update={"reveal_key_of": [*msg.reveal_key_of, survivor]}),
            ):
                with pytest.raises(SecAggError) as err:
                    h.sessions[x].on_unmask(bad)
                caught.append(err.value.reason)
        return msg

    r = only(h, h.run(drop={"masked": [lost]}, deliver=hostile))
    assert_mean_right(h, r, h.ids[1:])
    assert caught == ["both_shares", "both_shares"]
    assert h.sessions[x].refusals["both_shares"] == 2


def test_unsigned_or_forged_survivor_lists_are_refused_by_the_node() -> None:
    h = harness()
    x = h.ids[2]
    caught: list[str] = []

    def hostile(stage: str, node: str, msg: UnmaskRequest) -> Any:
        if stage == "unmask" and node == x:
            forged = [
                s.model_copy(update={"signature": msg.signatures[0].signature})
                for s in msg.signatures[1:]
            ]
            for bad in (
                msg.model_copy(update={"signatures": []}),
                msg.model_copy(update={"signatures": [msg.signatures[0], *forged]}),
                msg.model_copy(update={"survivors": msg.survivors[1:]}),
            ):
                with pytest.raises(SecAggError) as err:
                    h.sessions[x].on_unmask(bad)
                caught.append(err.value.reason)
        return msg

    r = only(h, h.run(deliver=hostile))
    assert_mean_right(h, r, h.ids)
    assert caught == ["unsigned_survivors", "too_few_signatures", "conflicting_survivors"]
    assert h.sessions[x].refusals["survivors_bad_signature"] == 7


def test_a_second_different_survivor_list_is_not_signed() -> None:
    h = harness()
    x = h.ids[1]

    def hostile(stage: str, node: str, msg: SurvivorsMsg) -> Any:
        if stage == "consistency" and node == x:
            h.sessions[x].on_survivors(msg.model_copy(update={"survivors": msg.survivors[:-1]}))
        return msg

    r = only(h, h.run(deliver=hostile))  # x signed the short list, refuses the real one
    assert_mean_right(h, r, h.ids)  # x still counts: it uploaded
    assert h.sessions[x].refusals["conflicting_survivors"] == 1
    assert x not in h.aggs[0].state.u4


# -- masked inputs and consistency signatures at the aggregator ----------------------------------


def test_masked_vectors_of_wrong_length_or_modulus_are_refused() -> None:
    h = harness()
    x, y = h.ids[1], h.ids[7]

    def hostile(stage: str, node: str, out: tuple[MaskedInputHeader, bytes]) -> Any:
        if stage != "masked":
            return out
        header, body = out
        if node == x:
            longer = header.model_copy(update={"length": header.length + 1})
            return [(longer, body + bytes(4)), (header, body[:-4]), out]
        if node == y:
            wide = header.model_copy(update={"modulus_bits": 64})
            return [(wide, body), (wide, body + body), out]
        return out

    r = only(h, h.run(tamper=hostile))
    assert_mean_right(h, r, h.ids)
    assert refused(h) == {"wrong_length": 2, "wrong_modulus": 2}


def test_unsigned_or_badly_signed_survivor_lists_are_refused_by_the_aggregator() -> None:
    h = harness()
    x, y, z = h.ids[0], h.ids[4], h.ids[6]

    def hostile(stage: str, node: str, out: ConsistencySig) -> Any:
        if stage != "consistency":
            return out
        if node == x:
            return out.model_copy(update={"signature": ""})
        if node == y:
            return out.model_copy(update={"signature": p.b64(bytes(64))})
        if node == z:
            return resign(h, z, out, survivors=out.survivors[1:])
        return out

    r = only(h, h.run(tamper=hostile))
    assert_mean_right(h, r, h.ids)  # x, y and z uploaded: they count
    assert refused(h) == {"unsigned": 1, "bad_signature": 1, "wrong_survivors": 1}
    assert h.aggs[0].state.u4 == sorted(set(h.ids) - {x, y, z})


def test_groups_not_drawn_from_the_committed_seed_are_refused() -> None:
    h = harness()
    h.start()
    s = h.sessions[h.ids[0]]
    other = GroupsMsg(round_id=1, seed=bytes(32).hex(), groups=h.groups_msg.groups)
    with pytest.raises(SecAggError, match="bad_group_seed"):
        s.on_groups(other)
    shuffled = h.groups_msg.model_copy(update={"groups": [h.groups_msg.groups[0][::-1]]})
    with pytest.raises(SecAggError, match="wrong_groups"):
        s.on_groups(shuffled)
    assert isinstance(s.on_groups(h.groups_msg), AdvertiseKeys)
    assert s.refusals == {"bad_group_seed": 1, "wrong_groups": 1}


def test_messages_out_of_stage_are_refused() -> None:
    h = harness()
    h.start()
    agg, s = h.aggs[0], h.sessions[h.ids[0]]
    advert = s.on_groups(h.groups_msg)
    with pytest.raises(SecAggError, match="wrong_stage"):
        agg.receive_shares(
            ShareKeys.model_construct(round_id=1, group_id=0, node_id=h.ids[0], shares={}), h.ids[0]
        )
    with pytest.raises(SecAggError, match="wrong_stage"):
        s.on_survivors(SurvivorsMsg(round_id=1, group_id=0, survivors=h.ids))
    agg.receive_keys(advert, h.ids[0])
    assert agg.waiting_for() == h.ids[1:]
    assert agg.refusals == {"wrong_stage": 1} and s.refusals == {"wrong_stage": 1}


def test_joins_are_checked_for_round_voucher_and_signature() -> None:
    h = harness()
    x, y = h.ids[0], h.ids[1]
    h.start()
    good = h.sessions[x].join()
    kw = {"round_id": 1, "vouching_public": h.fleet_pub}
    assert check_join(good, x, **kw) is not None
    cases = {
        "forged_node_id": (good, y),
        "wrong_round": (resign(h, x, good, round_id=2), x),
        "bad_signature": (resign(h, y, good), x),
        "unsigned": (good.model_copy(update={"signature": ""}), x),
        "bad_voucher": (
            resign(h, x, good, voucher=h.vouchers[y].model_copy(update={"node_id": x})),
            x,
        ),
    }
    for reason, (msg, sender) in cases.items():
        with pytest.raises(SecAggError) as err:
            check_join(msg, sender, **kw)
        assert err.value.reason == reason
    revoked = frozenset({ident.fingerprint(h.identities[x])})
    with pytest.raises(SecAggError, match="revoked"):
        check_join(good, x, revoked=revoked, **kw)
