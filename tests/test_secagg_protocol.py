"""Whole secure rounds in one process: real node sessions and group aggregators exchanging the
real serialized messages (tests/support/secagg.py). Correctness against the plain mean,
dropouts, abandonment, resumption from the serialized state, and what the aggregator can see."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.secagg import Harness
from vfer.envelope import MAGIC, MessageError, from_json
from vfer.secagg import (
    GroupAbandoned,
    GroupResult,
    SecAggParams,
    masks,
    quantize,
    shamir,
    state,
    unmask,
)
from vfer.secagg import primitives as p
from vfer.secagg.wire import AdvertiseKeys, MaskedInputHeader, UnmaskShares

L = 4096


def harness(n: int = 8, **kw: object) -> Harness:
    return Harness(n, SecAggParams(**{"vector_length": L, **kw}))  # type: ignore[arg-type]


def exact_total(h: Harness, nodes: list[str]) -> np.ndarray:
    return np.sum([h.plaintext(n) for n in nodes], axis=0, dtype=np.uint32)


def assert_mean_right(h: Harness, r: GroupResult, nodes: list[str]) -> None:
    assert r.survivors == sorted(nodes) and r.problem is None
    assert np.array_equal(r.total, exact_total(h, nodes))  # the sum mod 2^32, exactly
    oracle = np.mean([h.clipped(n) for n in nodes], axis=0)
    err = np.max(np.abs(r.mean - oracle))
    assert err <= r.error_bound == quantize.error_bound(h.params, len(nodes), len(nodes))
    assert err > 0  # quantization is really there: the bound is not vacuous


def test_eight_nodes_give_the_mean_within_the_bound() -> None:
    h = harness()
    (r,) = h.run().values()
    assert_mean_right(h, r, h.ids)
    assert r.weight == 8 and r.lost == []
    assert not any(a.refusals for a in h.aggs.values())
    assert not any(s.refusals for s in h.sessions.values())


def test_many_groups_each_sum_their_own_members() -> None:
    h = harness(27)
    results = h.run()
    assert len(results) == 3  # 27 // 8 groups of 9
    seen = []
    for r in results.values():
        assert isinstance(r, GroupResult) and len(r.survivors) == 9
        assert_mean_right(h, r, r.survivors)
        seen += r.survivors
    assert sorted(seen) == h.ids


def test_sample_weighting_carries_the_count_inside_the_mask() -> None:
    h = harness(8, weighting="samples", max_weight=100)
    h.clips = {n: 10 * (i + 1) for i, n in enumerate(h.ids)} | {h.ids[7]: 5000}  # capped at 100
    (r,) = h.run().values()
    ws = [min(h.clips[n], 100) for n in h.ids]
    assert r.weight == sum(ws)
    oracle = np.average([h.clipped(n) for n in h.ids], axis=0, weights=ws)
    assert np.max(np.abs(r.mean - oracle)) <= quantize.error_bound(h.params, 8, r.weight)
    for raw in h.seen:  # no message carries a node's count in the clear
        assert b"clips" not in raw


def test_lost_after_sharing_keys_has_its_masks_removed() -> None:
    h = harness()
    lost = h.ids[3]
    (r,) = h.run(drop={"masked": [lost]}).values()
    assert_mean_right(h, r, [n for n in h.ids if n != lost])
    assert r.lost == [lost]


def test_lost_after_uploading_still_counts() -> None:
    h = harness()
    late = h.ids[5]
    (r,) = h.run(drop={"consistency": [late]}).values()
    assert_mean_right(h, r, h.ids)


def test_one_lost_after_sharing_and_one_after_uploading() -> None:
    h = harness()
    (r,) = h.run(drop={"masked": [h.ids[3]], "unmask": [h.ids[6]]}).values()
    assert_mean_right(h, r, [n for n in h.ids if n != h.ids[3]])


@pytest.mark.parametrize(
    ("stage", "reason"),
    [
        ("keys", "too_few_keys"),
        ("shares", "too_few_shares"),
        ("masked", "too_few_inputs"),
        ("consistency", "too_few_signatures"),
        ("unmask", "too_few_reveals"),
    ],
)
def test_below_threshold_the_group_is_abandoned_and_nothing_revealed(
    stage: str, reason: str
) -> None:
    h = harness()
    (r,) = h.run(drop={stage: h.ids[:4]}).values()  # 4 of 8 left, threshold 5
    assert isinstance(r, GroupAbandoned) and r.reason == reason
    (agg,) = h.aggs.values()
    assert agg.stage == "abandoned" and agg.state.abandoned == reason and agg.result is None
    final, total = state.load(agg.dump())
    assert total is None and final.revealed == {}  # no sum, no shares kept
    if stage != "unmask":  # nobody was ever asked to reveal a share
        assert not any(b'"kind":"secagg_revealed"' in raw for raw in h.seen)
    else:  # 4 holders revealed: fewer than t shares of each seed, which say nothing
        seed_shares = [
            from_json(raw, UnmaskShares).seed_shares for raw in _kind(h, "secagg_revealed")
        ]
        assert len(seed_shares) == 4


STAGES = ("keys", "shares", "masked", "consistency", "unmask")
ABANDON = dict(
    zip(
        STAGES,
        (
            "too_few_keys",
            "too_few_shares",
            "too_few_inputs",
            "too_few_signatures",
            "too_few_reveals",
        ),
        strict=True,
    )
)


@settings(max_examples=25, deadline=None)
@given(st.integers(5, 9), st.data())  # one group (min 5)
def test_any_dropout_pattern_gives_the_exact_sum_or_abandons_by_name(
    n: int, data: st.DataObject
) -> None:
    h = Harness(n, SecAggParams(vector_length=64, min_group_size=5))
    t = h.params.threshold(n)
    drop = {s: data.draw(st.sets(st.sampled_from(h.ids), max_size=3), label=s) for s in STAGES}
    (r,) = h.run(drop=drop).values()
    alive, first_short = set(h.ids), None
    for s in STAGES:
        alive -= drop[s]
        if first_short is None and len(alive) < t:
            first_short = s
    if first_short is not None:
        assert isinstance(r, GroupAbandoned) and r.reason == ABANDON[first_short]
        return
    counted = sorted(set(h.ids) - drop["keys"] - drop["shares"] - drop["masked"])
    assert isinstance(r, GroupResult) and r.survivors == counted
    assert np.array_equal(r.total, exact_total(h, counted))


def test_state_survives_serialization_mid_protocol_and_finishes_the_same() -> None:
    plain, resumed = harness(), harness()
    resumed.updates = plain.updates
    drop = {"masked": [plain.ids[2]]}
    (a,) = plain.run(drop=drop).values()
    (b,) = resumed.run(drop=drop, checkpoint=True).values()  # dump + resume after each stage
    assert len(resumed.states) > len(plain.states)
    assert np.array_equal(a.total, b.total) and np.array_equal(a.mean, b.mean)
    agg = next(iter(resumed.aggs.values()))
    assert agg.stage == "done" and state.load(agg.dump())[0].stage == "done"


def test_redelivered_messages_are_answered_the_same_and_not_refused() -> None:
    h = harness()

    def twice(stage: str, node: str, out: object) -> list[object]:
        return [out, out]

    def again(stage: str, node: str, msg: object) -> object:
        first = h.sessions[node]
        answer = {"keys": first.on_groups, "shares": first.on_keys, "masked": first.on_shares}
        if stage in answer:
            assert answer[stage](msg) == answer[stage](msg)  # type: ignore[operator]
        return msg

    (r,) = h.run(tamper=twice, deliver=again).values()
    assert_mean_right(h, r, h.ids)
    assert not any(a.refusals for a in h.aggs.values())


# -- what the aggregator can see ----------------------------------------------------------------


def _kind(h: Harness, kind: str) -> list[bytes]:
    out = []
    for raw in h.seen:
        head = raw[8 : 8 + int.from_bytes(raw[4:8], "big")] if raw.startswith(MAGIC) else raw
        if json.loads(head).get("kind") == kind:
            out.append(raw)
    return out


def _masked_inputs(h: Harness) -> dict[str, np.ndarray]:
    from vfer.envelope import unpack

    out = {}
    for raw in _kind(h, "secagg_masked"):
        header, body = unpack(raw, MaskedInputHeader)
        out[header.node_id] = np.frombuffer(body, dtype="<u4").astype(np.uint32)
    return out


def _decoded(h: Harness, vec: np.ndarray) -> np.ndarray:
    return vec[:-1].view(np.int32).astype(np.float64) / quantize.scale(h.params)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def _looks_like_no_update(h: Harness, vec: np.ndarray) -> None:
    """``vec`` (uint32, as held) neither equals nor decodes to any single node's update."""
    dec = _decoded(h, vec)
    for n in h.ids:
        assert not np.array_equal(vec, h.plaintext(n))
        assert np.max(np.abs(dec - h.clipped(n))) > 1.0  # updates are ~0.02: far off
        assert abs(_corr(dec, h.clipped(n))) < 0.1  # about 0 (L = 4096: sd 0.016)


def test_masked_uploads_look_random_even_after_the_self_masks_are_rebuilt() -> None:
    h = harness(9)
    (r,) = h.run(drop={"masked": [h.ids[0]]}).values()
    uploads = _masked_inputs(h)
    assert sorted(uploads) == r.survivors
    adverts = {a.node_id: a for a in (from_json(x, AdvertiseKeys) for x in _kind(h, "secagg_keys"))}
    revealed = [from_json(x, UnmaskShares) for x in _kind(h, "secagg_revealed")]
    members = h.aggs[0].state.members
    for node, y in uploads.items():
        _looks_like_no_update(h, y)
        # everything the aggregator saw: rebuild the node's self-mask seed and take it off
        shares = {
            members.index(m.node_id) + 1: shamir.share_value(p.unb64(m.seed_shares[node]))
            for m in revealed
            if node in m.seed_shares
        }
        check = unmask.seed_check(h.aggs[0].state, node)
        seed = unmask.rebuild(shares, h.params.threshold(len(members)), check)
        assert (
            seed is not None
            and masks.seed_commitment(1, 0, node, seed) == adverts[node].seed_commitment
        )
        rest = y - masks.self_mask(seed, 1, 0, node, h.params.masked_length)
        _looks_like_no_update(h, rest)  # the pairwise masks still hide it


def test_no_stored_state_or_message_holds_a_single_update() -> None:
    h = harness()
    h.run(drop={"masked": [h.ids[4]]}, checkpoint=True)
    needles = {n: (h.plaintext(n)[:8].tobytes(), h.updates[n][:8].tobytes()) for n in h.ids}
    for raw in h.states + h.seen:
        assert not any(a in raw or b in raw for a, b in needles.values())
    stages = set()
    for raw in h.states:
        st, total = state.load(raw)
        stages.add(st.stage)
        if total is None or not total.any():
            continue
        if st.stage != "done":  # a running sum of masked inputs
            _looks_like_no_update(h, total)
            continue
        mean = quantize.group_mean(total, h.params)[0]  # the group's output: 7 nodes' mean
        for n in h.ids:
            assert not np.array_equal(total, h.plaintext(n))
            assert np.max(np.abs(mean - h.clipped(n))) > 1000 * quantize.error_bound(h.params, 7, 7)
    assert {"masked", "consistency", "unmask", "done"} <= stages


def test_frame_errors_keep_their_reasons() -> None:
    h = harness()
    h.start()
    agg = h.aggs[0]
    with pytest.raises(MessageError, match="not_a_frame"):
        agg.receive_masked_frame(b"junk", h.ids[0])
    assert agg.refusals["not_a_frame"] == 1
