"""Random groups drawn with a seed the aggregator commits to before it knows who takes part.

The aggregator draws a 32-byte seed when it opens a round and puts :func:`commit_seed` of it in
the signed round message. Once the participants are fixed it reveals the seed; every node
checks the commitment and recomputes :func:`draw_groups` itself, so the aggregator cannot pick
who shares a group with whom after seeing the participants (the SHARE design, arXiv 2110.02940:
each group is summed securely, the robust rule runs over the group means).

Groups: ``k = N // min_size`` groups of sizes that differ by at most one, so every group has
between ``min_size`` and ``2 x min_size - 1`` members. The order is by HMAC-SHA256(seed, id).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from vfer.secagg import primitives as p
from vfer.secagg.params import SecAggError

SEED_BYTES = 32


def new_seed() -> bytes:
    return secrets.token_bytes(SEED_BYTES)


def commit_seed(round_id: int, seed: bytes) -> str:
    """The commitment that goes into the signed round message (hex SHA-256)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed of {len(seed)} bytes, expected {SEED_BYTES}")
    return p.digest("groups-seed", round_id, seed)


def draw_groups(participants: Iterable[str], seed: bytes, min_size: int) -> list[list[str]]:
    """The round's groups (each sorted; group id = position). ``too_few_participants`` when
    fewer than ``min_size`` take part."""
    people = sorted(set(participants))
    if len(people) < min_size:
        raise SecAggError(
            "too_few_participants", f"{len(people)} participants, groups need {min_size}"
        )
    order = sorted(people, key=lambda n: hmac.new(seed, n.encode(), hashlib.sha256).digest())
    k = len(order) // min_size
    base, extra = divmod(len(order), k)
    groups, at = [], 0
    for g in range(k):
        size = base + (1 if g < extra else 0)
        groups.append(sorted(order[at : at + size]))
        at += size
    return groups


def members_digest(round_id: int, group_id: int, members: Iterable[str]) -> str:
    """What binds a node's signed keys to exactly this group of this round."""
    return p.digest("members", round_id, group_id, *sorted(members))
