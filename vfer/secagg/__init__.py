"""Secure aggregation (SecAgg+, Bonawitz et al. 2017; Bell et al. 2020) as pure code: the
aggregator learns each group's sum of updates, never one node's update.

No MQTT, SQLite or clock here: :class:`NodeSession` (one per node per round) and
:class:`GroupAggregator` (one per group on the aggregator) take typed messages
(:mod:`vfer.secagg.wire`) and return typed messages; the transports move them. Groups of at
least ``min_group_size`` are drawn with a committed seed (:mod:`vfer.secagg.groups`), each is
summed securely, and the caller applies its robust rule to the group means (SHARE, arXiv
2110.02940). docs/secure-aggregation.md is the protocol's reference.
"""

from vfer.secagg.aggregator import GroupAggregator, GroupResult
from vfer.secagg.groups import commit_seed, draw_groups, members_digest, new_seed
from vfer.secagg.identity import (
    Revocations,
    Voucher,
    fingerprint,
    load_identity,
    load_voucher,
    make_identity,
    open_revocations,
    revoke,
    save_identity,
    save_voucher,
    verify_voucher,
    vouch,
)
from vfer.secagg.node import NodeSession
from vfer.secagg.params import GroupAbandoned, SecAggError, SecAggParams
from vfer.secagg.quantize import error_bound, flatten, group_mean, unflatten

__all__ = [
    "GroupAbandoned",
    "GroupAggregator",
    "GroupResult",
    "NodeSession",
    "Revocations",
    "SecAggError",
    "SecAggParams",
    "Voucher",
    "commit_seed",
    "draw_groups",
    "error_bound",
    "fingerprint",
    "flatten",
    "group_mean",
    "load_identity",
    "load_voucher",
    "make_identity",
    "members_digest",
    "new_seed",
    "open_revocations",
    "revoke",
    "save_identity",
    "save_voucher",
    "unflatten",
    "verify_voucher",
    "vouch",
]
