"""The last step on the aggregator, pure: rebuild the secrets from revealed shares, remove the
masks from the sum, decode the group's mean and check it against the clip.

Survivors (U3) have their self-mask seed rebuilt and their self mask removed; their pairwise
masks cancel among themselves. Members lost after sharing (U2 minus U3) have their mask key
rebuilt, and the pairwise mask each survivor added with them is removed. A rebuilt secret is
checked against what its owner committed to (the seed commitment, the mask public key), so
shares that do not lie on one polynomial are found and named.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from vfer.secagg import masks, quantize, shamir
from vfer.secagg import primitives as p
from vfer.secagg.params import SecAggParams
from vfer.secagg.state import GroupState
from vfer.secagg.wire import share_b64_ok

#: Subsets of t shares tried before a secret is declared unrecoverable.
MAX_TRIES = 256


@dataclass(frozen=True)
class GroupResult:
    """One group's outcome: its unmasked sum, decoded mean and who counts."""

    round_id: int
    group_id: int
    survivors: list[str]
    lost: list[str]
    total: np.ndarray
    mean: np.ndarray
    weight: int
    error_bound: float
    problem: str | None = None


def rebuild(shares: Mapping[int, int], t: int, check: Callable[[bytes], bool]) -> bytes | None:
    """The secret from ``shares`` {x: y} that passes ``check``, trying subsets of ``t``."""
    for n, subset in enumerate(itertools.combinations(sorted(shares), t)):
        if n >= MAX_TRIES:
            break
        try:
            secret = shamir.reconstruct({x: shares[x] for x in subset}, t)
        except shamir.ShamirError:
            continue
        if check(secret):
            return secret
    return None


def verified_shares(
    state: GroupState, holder: str, kind: str, shares: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """Of the ``kind`` ("seed" or "key") shares ``holder`` revealed, those that match what
    their owner committed to when it dealt them, and a reason per refused one
    (``malformed_share``, ``wrong_share``)."""
    good, refused = {}, []
    what = "seed-share" if kind == "seed" else "key-share"
    for owner, text in shares.items():
        try:
            raw = p.unb64(text) if share_b64_ok(text) else b""
            shamir.share_value(raw)
        except (ValueError, shamir.ShamirError):
            refused.append("malformed_share")
            continue
        dealt = state.shares[owner]
        if owner == holder:
            own = dealt.own_seed_share_commitment, dealt.own_key_share_commitment
            want = own[0] if kind == "seed" else own[1]
        else:
            sealed = dealt.shares[holder]
            want = sealed.seed_share_commitment if kind == "seed" else sealed.key_share_commitment
        ids = (state.round_id, state.group_id, owner, holder)
        if masks.share_commitment(what, *ids, raw) != want:
            refused.append("wrong_share")
            continue
        good[owner] = text
    return good, refused


def shares_of(state: GroupState, kind: str, owner: str) -> dict[int, int]:
    """Verified shares {x of holder: value} of ``owner``'s seed or mask key."""
    out = {}
    for holder, msg in state.revealed.items():
        text = (msg.seed_shares if kind == "seed" else msg.key_shares).get(owner)
        if text is not None:
            out[state.members.index(holder) + 1] = shamir.share_value(p.unb64(text))
    return out


def seed_check(state: GroupState, owner: str) -> Callable[[bytes], bool]:
    want = state.keys[owner].seed_commitment
    return lambda s: masks.seed_commitment(state.round_id, state.group_id, owner, s) == want


def key_check(state: GroupState, owner: str) -> Callable[[bytes], bool]:
    want = p.unb64(state.keys[owner].mask_key)
    return lambda s: p.x25519_public_bytes(p.x25519_from_private(s)) == want


def unmask(
    state: GroupState, masked_sum: np.ndarray, seeds: Mapping[str, bytes], keys: Mapping[str, bytes]
) -> np.ndarray:
    """The group's plaintext sum: the masked sum less survivors' self masks and the pairwise
    masks survivors shared with the members lost after sharing."""
    n, r, g = state.params.masked_length, state.round_id, state.group_id
    total = masked_sum.copy()
    for owner in state.u3:
        np.subtract(total, masks.self_mask(seeds[owner], r, g, owner, n), out=total)
    for lost, raw in keys.items():
        sk: X25519PrivateKey = p.x25519_from_private(raw)
        for survivor in state.u3:
            mask = masks.pairwise_mask(
                sk, p.unb64(state.keys[survivor].mask_key), r, g, lost, survivor, n
            )
            undo = np.zeros(n, dtype=np.uint32)
            masks.add_pairwise(undo, mask, survivor, lost)  # what the survivor added
            np.subtract(total, undo, out=total)
    return total


def decode(state: GroupState, total: np.ndarray) -> GroupResult:
    """The mean of the group and the checks an honest group passes: its weight coordinate
    adds up (``bad_weight``) and its mean lies in the clip region (``out_of_clip``): the mean
    of clipped updates does, by convexity, so a node that masked values beyond the clip can
    move its group only that far."""
    params: SecAggParams = state.params
    n = len(state.u3)
    lost = sorted(set(state.members) - set(state.u3))
    weight = int(total[-1])
    ok_weight = weight == n if params.weighting == "mean" else n <= weight <= n * params.max_weight
    if not ok_weight:
        empty = np.zeros(params.vector_length)
        return GroupResult(
            state.round_id, state.group_id, state.u3, lost, total, empty, weight, 0.0, "bad_weight"
        )
    mean, weight = quantize.group_mean(total, params)
    bound = quantize.error_bound(params, n, weight)
    c = params.coordinate_bound + bound
    problem = None
    if float(np.max(np.abs(mean))) > c or float(
        np.linalg.norm(mean)
    ) > params.clip_norm + bound * np.sqrt(mean.size):
        problem = "out_of_clip"
    return GroupResult(
        state.round_id, state.group_id, state.u3, lost, total, mean, weight, bound, problem
    )
