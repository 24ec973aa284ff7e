"""Secure aggregation's pure parts against oracles: Shamir, quantization, groups, masks,
identities, the state value (property-based with hypothesis where it fits)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfer import signing
from vfer.envelope import MessageError, to_json
from vfer.heads_spec import count_params, vfer_spec
from vfer.secagg import SecAggError, SecAggParams, groups, masks, quantize, shamir, state
from vfer.secagg import identity as ident
from vfer.secagg import primitives as p

SECRET = st.binary(min_size=32, max_size=32)


@settings(max_examples=40, deadline=None)
@given(SECRET, st.integers(5, 15), st.data())
def test_shamir_any_t_shares_give_the_secret_back(
    secret: bytes, n: int, data: st.DataObject
) -> None:
    t = n // 2 + 1
    shares = shamir.split(secret, n, t)
    subset = data.draw(st.sets(st.integers(1, n), min_size=t, max_size=n))
    assert shamir.reconstruct({x: shares[x] for x in subset}, t) == secret
    fewer = sorted(subset)[: t - 1]
    with pytest.raises(shamir.ShamirError, match="threshold"):
        shamir.reconstruct({x: shares[x] for x in fewer}, t)


def test_shamir_shares_below_threshold_are_random_and_bytes_are_checked() -> None:
    a = shamir.split(bytes(32), 8, 5)
    b = shamir.split(bytes(32), 8, 5)
    assert all(a[x] != b[x] for x in range(1, 9))  # fresh randomness per split
    wrong = dict(a)
    wrong[1] = (wrong[1] + 1) % shamir.PRIME
    try:
        got: bytes | None = shamir.reconstruct({x: wrong[x] for x in range(1, 6)}, 5)
    except shamir.ShamirError:  # almost always: the result is no 32-byte value
        got = None
    assert got != bytes(32)
    with pytest.raises(shamir.ShamirError, match="66"):
        shamir.share_value(b"\x01" * 65)
    with pytest.raises(shamir.ShamirError, match="outside"):
        shamir.share_value(b"\xff" * 66)
    assert shamir.share_value(shamir.share_bytes(a[3])) == a[3]


def params(**kw: object) -> SecAggParams:
    return SecAggParams(**{"vector_length": 64, **kw})  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    st.integers(5, 40),
    st.floats(0.01, 50),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["mean", "samples"]),
)
def test_sum_of_extreme_updates_never_wraps(m: int, c: float, seed: int, weighting: str) -> None:
    """Worst case: every node of the largest group at +c (or -c) everywhere, full weight."""
    pr = params(min_group_size=m, clip_value=c, clip_norm=1e6, weighting=weighting)
    rng = np.random.default_rng(seed)
    w = quantize.node_weight(pr.max_weight, pr)
    for sign in (1.0, -1.0):
        x = np.full(pr.vector_length, sign * c)
        plain = [quantize.encode(x, w, pr, rng) for _ in range(pr.max_group_size)]
        total = np.sum(plain, axis=0, dtype=np.uint32)
        mean, weight = quantize.group_mean(total, pr)
        bound = quantize.error_bound(pr, pr.max_group_size, weight)
        assert np.max(np.abs(mean - sign * c)) <= bound


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-2, 2, allow_nan=False), min_size=64, max_size=64),
    st.integers(5, 15),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(1, 1000), min_size=15, max_size=15),
    st.sampled_from(["mean", "samples"]),
)
def test_decoded_mean_within_documented_bound(
    base: list[float], n: int, seed: int, counts: list[int], weighting: str
) -> None:
    pr = params(weighting=weighting, clip_value=1.0)
    rng = np.random.default_rng(seed)
    updates = [np.asarray(base) * rng.uniform(-1, 1) + rng.normal(0, 0.3, 64) for _ in range(n)]
    ws = [quantize.node_weight(c, pr) for c in counts[:n]]
    total = np.sum(
        [quantize.encode(u, w, pr, rng) for u, w in zip(updates, ws, strict=True)],
        axis=0,
        dtype=np.uint32,
    )
    mean, weight = quantize.group_mean(total, pr)
    oracle = np.average([quantize.clip(u, pr) for u in updates], axis=0, weights=ws)
    assert weight == sum(ws)
    assert np.max(np.abs(mean - oracle)) <= quantize.error_bound(pr, n, weight)


def test_scale_and_bound_for_the_real_v() -> None:
    L = count_params(vfer_spec(6))["trainable"]
    pr = SecAggParams(vector_length=L)
    assert L == 208_582 and pr.max_group_size == 15
    assert quantize.scale(pr) == pytest.approx((2**31 - 1 - 15) / (15 * 10.0))
    assert quantize.error_bound(pr, 8, 8) == pytest.approx(6.98e-8, rel=1e-2)
    assert 4 * pr.masked_length / (4 * L) < 1.0001  # the upload is float32-sized


def test_clip_bounds_norm_and_coordinates_and_refuses_nan() -> None:
    pr = params(clip_norm=3.0, clip_value=1.0)
    x = np.zeros(64)
    x[0] = 100.0
    assert quantize.clip(x, pr)[0] == 1.0
    y = quantize.clip(np.full(64, 0.9), pr)
    assert np.linalg.norm(y) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="NaN"):
        quantize.clip(np.full(64, np.nan), pr)
    with pytest.raises(ValueError, match="expects 64"):
        quantize.clip(np.zeros(3), pr)


def test_flatten_round_trip_uses_spec_order() -> None:
    spec = vfer_spec(6)
    rng = np.random.default_rng(0)
    w = {n: rng.normal(size=s.shape).astype(np.float32) for n, s in spec.items() if s.trainable}
    flat = quantize.flatten(w, spec)
    assert flat.size == 208_582
    back = quantize.unflatten(flat, spec)
    assert all(np.array_equal(back[n], w[n]) for n in w)
    with pytest.raises(ValueError, match="lack"):
        quantize.flatten({}, spec)


@settings(max_examples=50, deadline=None)
@given(
    st.sets(st.text("abcdefgh0123", min_size=1, max_size=8), min_size=5, max_size=80),
    st.integers(5, 12),
)
def test_groups_partition_participants_within_size_bounds(people: set[str], m: int) -> None:
    seed = bytes(range(32))
    if len(people) < m:
        with pytest.raises(SecAggError, match="too_few_participants"):
            groups.draw_groups(people, seed, m)
        return
    gs = groups.draw_groups(people, seed, m)
    assert sorted(itertools.chain(*gs)) == sorted(people)
    assert all(m <= len(g) <= 2 * m - 1 for g in gs)
    assert groups.draw_groups(list(people)[::-1], seed, m) == gs  # order of arrival is irrelevant


def test_seed_commitment_binds_round_and_seed() -> None:
    seed = groups.new_seed()
    assert groups.commit_seed(3, seed) != groups.commit_seed(4, seed)
    assert groups.commit_seed(3, seed) != groups.commit_seed(3, groups.new_seed())
    people = [f"n{i}" for i in range(40)]
    assert groups.draw_groups(people, seed, 8) != groups.draw_groups(people, groups.new_seed(), 8)


def test_pairwise_masks_cancel_and_look_uniform() -> None:
    a, b = p.new_x25519(), p.new_x25519()
    ma = masks.pairwise_mask(a, p.x25519_public_bytes(b), 1, 0, "u", "v", 50_000)
    mb = masks.pairwise_mask(b, p.x25519_public_bytes(a), 1, 0, "v", "u", 50_000)
    assert np.array_equal(ma, mb)
    acc = np.zeros(50_000, np.uint32)
    masks.add_pairwise(acc, ma, "u", "v")
    masks.add_pairwise(acc, mb, "v", "u")
    assert not acc.any()
    other = masks.pairwise_mask(a, p.x25519_public_bytes(b), 2, 0, "u", "v", 50_000)
    assert not np.array_equal(ma, other)  # the round is in the key
    assert abs(ma.astype(np.float64).mean() / 2**32 - 0.5) < 0.01


def test_sealed_shares_open_only_for_their_receiver() -> None:
    u, v, w = p.new_x25519(), p.new_x25519(), p.new_x25519()
    ids = (1, 0, "u", "v")
    sealed = masks.seal_shares(u, p.x25519_public_bytes(v), ids, b"\x01" * 66, b"\x02" * 66)
    assert masks.open_shares(v, p.x25519_public_bytes(u), ids, sealed) == (
        b"\x01" * 66,
        b"\x02" * 66,
    )
    assert masks.open_shares(w, p.x25519_public_bytes(u), ids, sealed) is None
    assert masks.open_shares(v, p.x25519_public_bytes(u), (2, 0, "u", "v"), sealed) is None


def test_voucher_round_trip_forgery_and_revocation(tmp_path: Path) -> None:
    fleet, node = ident.make_identity(), ident.make_identity()
    ident.save_identity(tmp_path / ident.IDENTITY_KEY_NAME, node)
    assert (tmp_path / ident.IDENTITY_KEY_NAME).stat().st_mode & 0o077 == 0
    loaded = ident.load_identity(tmp_path / ident.IDENTITY_KEY_NAME)
    voucher = ident.vouch(fleet, "pi-1", loaded.public_key())
    ident.save_voucher(tmp_path / ident.VOUCHER_NAME, voucher)
    again = ident.load_voucher(tmp_path / ident.VOUCHER_NAME)
    got = ident.verify_voucher(again, fleet.public_key(), node_id="pi-1")
    assert p.ed25519_public_bytes(got) == p.ed25519_public_bytes(node)
    with pytest.raises(SecAggError, match="forged_node_id"):
        ident.verify_voucher(voucher, fleet.public_key(), node_id="pi-2")
    forged = voucher.model_copy(update={"node_id": "pi-2"})
    with pytest.raises(SecAggError, match="bad_voucher"):
        ident.verify_voucher(forged, fleet.public_key())
    other_fleet = ident.make_identity()
    with pytest.raises(SecAggError, match="bad_voucher"):
        ident.verify_voucher(
            ident.vouch(other_fleet, "pi-1", node.public_key()), fleet.public_key()
        )
    revs = ident.revoke(fleet, None, voucher)
    revs2 = ident.revoke(
        fleet, revs, ident.vouch(fleet, "pi-9", ident.make_identity().public_key())
    )
    opened = ident.open_revocations(to_json(revs2), fleet.public_key(), newer_than=revs.serial)
    assert opened.serial == 2 and ident.fingerprint(node) in opened.fingerprints
    with pytest.raises(SecAggError, match="revoked"):
        ident.verify_voucher(voucher, fleet.public_key(), frozenset(opened.fingerprints))
    with pytest.raises(SecAggError, match="stale_revocations"):
        ident.open_revocations(to_json(revs), fleet.public_key(), newer_than=1)
    with pytest.raises(MessageError, match="bad_signature"):
        ident.open_revocations(to_json(revs.model_copy(update={"serial": 7})), fleet.public_key())
    with pytest.raises(signing.KeyFileError, match="cannot read"):
        ident.load_voucher(tmp_path / "absent.json")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"FVSA",
        b"FVSA\x00\x00\x00\x05{bad}",
        b'FVSA\x00\x00\x00\x0e{"version":2}',
        b"NOPE" * 10,
    ],
)
def test_unreadable_state_is_bad_state(raw: bytes) -> None:
    with pytest.raises(SecAggError, match="bad_state"):
        state.load(raw)


def test_params_bounds() -> None:
    with pytest.raises(ValueError, match="min_group_size"):
        SecAggParams(vector_length=8, min_group_size=4)
    with pytest.raises(ValueError, match="threshold_fraction"):
        SecAggParams(vector_length=8, threshold_fraction=0.4)
    pr = SecAggParams(vector_length=8)
    assert [pr.threshold(n) for n in (5, 8, 9, 15)] == [3, 5, 5, 8]
    assert SecAggParams(vector_length=8, threshold_fraction=0.66).threshold(8) == 6
