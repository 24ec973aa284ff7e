"""One secure round on the leader: joins, the group draw, one GroupAggregator per group, stage
deadlines, and the group means that reach the rule.

The protocol is :mod:`vfer.secagg` (pure); this module is its loop on the aggregator. While the
round is open, each ``secagg_join`` on ``<prefix>/nodes/<id>/secagg`` is checked
(:func:`vfer.secagg.wire.check_join`) and listed; the round policy counts joins as it counts
plain submissions. When the policy closes the round, :meth:`SecureRound.draw` reveals the seed
committed in the signed round message and publishes the groups; from then on every message on a
node's secagg topic goes to its group's :class:`~vfer.secagg.GroupAggregator`. :meth:`step`
(every tick) closes a group's stage once nobody is missing or its ``stage_s`` passed, stores the
group's :meth:`~vfer.secagg.GroupAggregator.dump` and publishes what the close returned, signed
with the fleet key. A group below its threshold is dropped with its reason logged. Once every
group is finished or dropped, :meth:`contributions` turns the group means into what
:func:`broker_aggregator.rules.combine` takes. A refused message is logged with the node id and
its reason, counted in :attr:`refusals`, and never stops the round.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_aggregator.effects import Publish
from broker_aggregator.robust import Rule
from broker_aggregator.rules import Combined
from broker_aggregator.secure_config import SecureAggregationConfig
from broker_aggregator.secure_gather import combine_groups
from broker_aggregator.secure_keys import Keys
from broker_aggregator.secure_redelivery import redelivered
from broker_aggregator.secure_store import SecureStore
from vfer.envelope import (
    MessageError,
    from_json,
    sign_message,
    to_json,
)
from vfer.heads_spec import WeightSpec, trainable_names
from vfer.secagg import (
    GroupAggregator,
    GroupResult,
    SecAggError,
    SecAggParams,
    commit_seed,
    draw_groups,
    new_seed,
)
from vfer.secagg.wire import (
    GroupsMsg,
    Join,
    SecAggRound,
    check_join,
)
from vfer.topics import Topics

log = logging.getLogger(__name__)

#: Stage -> (what closing it publishes, on which group topic leaf; None: per node).
_CLOSES: dict[str, tuple[str, str | None]] = {
    "keys": ("close_keys", "keys"),
    "shares": ("close_shares", None),
    "masked": ("close_masked", "survivors"),
    "consistency": ("close_consistency", "unmask"),
}
#: Stage -> the close whose message a node of that stage is answering (republished after a
#: restart; every close is idempotent once its stage closed).
_CURRENT: dict[str, str] = {
    "shares": "keys",
    "masked": "shares",
    "consistency": "masked",
    "unmask": "consistency",
}


@dataclass
class SecureRound:
    """The leader's side of one secure round (module docstring)."""

    round_id: int
    params: SecAggParams
    stage_s: float
    store: SecureStore
    topics: Topics
    keys: Keys
    seed: bytes
    revoked: frozenset[str] = frozenset()
    joined: list[str] = field(default_factory=list)
    groups: list[list[str]] | None = None
    aggs: dict[int, GroupAggregator] = field(default_factory=dict)
    #: group id -> its result, or the reason it was dropped
    results: dict[int, GroupResult | str] = field(default_factory=dict)
    refusals: Counter[str] = field(default_factory=Counter)
    _since: dict[int, float] = field(default_factory=dict)
    _out: list[Publish] = field(default_factory=list)

    # -- making and resuming ------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        round_id: int,
        cfg: SecureAggregationConfig,
        vector_length: int,
        store: SecureStore,
        topics: Topics,
        keys: Keys,
    ) -> SecureRound:
        """The round's secure state: new (a fresh committed seed) or read back after a restart."""
        if store.seed(round_id) is None:
            store.new_round(round_id, new_seed())
        seed = store.seed(round_id)
        assert seed is not None
        rnd = cls(
            round_id, cfg.params(vector_length), cfg.stage_s, store, topics, keys, seed,
            revoked=keys.revoked(), joined=store.joined(round_id),
        )  # fmt: skip
        groups = store.groups(round_id)
        if groups is not None:
            rnd._resume(groups)
        return rnd

    def _resume(self, groups: list[list[str]]) -> None:
        """Each group from its stored state; one that cannot be read is dropped (``bad_state``)."""
        self.groups = groups
        states = self.store.group_states(self.round_id)
        now = time.monotonic()
        for gid in range(len(groups)):
            try:
                agg = GroupAggregator.resume(states[gid], self.keys.vouching, self.revoked)
            except (KeyError, SecAggError, ValueError) as exc:
                self._drop(gid, "bad_state", f"its stored state is unreadable: {exc}")
                continue
            self.aggs[gid], self._since[gid] = agg, now
            if agg.stage == "abandoned":
                self.results[gid] = agg.state.abandoned or "abandoned"
            elif agg.stage == "done" and agg.result is not None:
                self.results[gid] = agg.result
        log.info("round %d: resumed %d secure groups", self.round_id, len(groups))

    def round_info(self) -> SecAggRound:
        """What the signed round message carries: the parameters and the seed's commitment."""
        return SecAggRound(
            params=self.params, group_seed_commitment=commit_seed(self.round_id, self.seed)
        )

    def _drain(self) -> list[Publish]:
        out, self._out = self._out, []
        return out

    # -- messages from nodes ------------------------------------------------------------------
    def on_message(self, node: str, payload: bytes) -> None:
        """A payload from ``<prefix>/nodes/<node>/secagg``: a join before the draw, a stage
        message after it. A refusal is logged and counted; it never raises."""
        try:
            if self.groups is None:
                self._join(node, payload)
            else:
                self._to_group(node, payload)
        except MessageError as exc:
            self.refusals[exc.reason] += 1
            log.warning(
                "round %d: refused secure message from %s: reason=%s (%s)",
                self.round_id, node, exc.reason, exc.detail,
            )  # fmt: skip

    def _join(self, node: str, payload: bytes) -> None:
        join = from_json(payload, Join)
        check_join(
            join, node, round_id=self.round_id, vouching_public=self.keys.vouching,
            revoked=self.revoked,
        )  # fmt: skip
        if node not in self.joined:
            self.joined.append(node)
            self.store.set_joined(self.round_id, self.joined)

    def _to_group(self, node: str, payload: bytes) -> None:
        gid = next((g for g, members in enumerate(self.groups or []) if node in members), None)
        if gid is None:
            raise SecAggError("not_in_group", f"{node} is in no group of round {self.round_id}")
        agg = self.aggs.get(gid)
        if agg is None or gid in self.results:
            done = isinstance(self.results.get(gid), GroupResult)
            raise SecAggError("finished" if done else "abandoned", f"group {gid} takes no more")
        if not redelivered(agg, node, payload):
            agg.receive(payload, node)

    # -- the draw and the stages --------------------------------------------------------------
    def draw(self) -> list[Publish]:
        """Reveal the seed, publish the groups, start one GroupAggregator per group."""
        if self.groups is not None:
            return self.republish()
        try:
            groups = draw_groups(self.joined, self.seed, self.params.min_group_size)
        except SecAggError as exc:
            log.error("round %d: no secure round: %s (%s)", self.round_id, exc.reason, exc.detail)
            groups = []
        self.groups = groups
        self.store.set_groups(self.round_id, groups)
        now = time.monotonic()
        for gid, members in enumerate(groups):
            self.aggs[gid] = GroupAggregator.new(
                round_id=self.round_id, group_id=gid, members=members, params=self.params,
                vouching_public=self.keys.vouching, revoked=self.revoked,
            )  # fmt: skip
            self._since[gid] = now
            self._save(gid)
        log.info(
            "round %d: %d joined, %d secure groups of %s",
            self.round_id, len(self.joined), len(groups), [len(g) for g in groups],
        )  # fmt: skip
        self._publish_groups()
        return self._drain()

    def _publish_groups(self) -> None:
        msg = GroupsMsg(round_id=self.round_id, seed=self.seed.hex(), groups=self.groups or [])
        self._send(self.topics.secagg_groups, msg)

    def step(self, now: float) -> list[Publish]:
        """Close every stage that has all its answers or passed its deadline; finish groups."""
        for gid, agg in self.aggs.items():
            if gid in self.results:
                continue
            late = now - self._since[gid] > self.stage_s
            if agg.stage == "unmask":
                if agg.can_finish() and (not agg.waiting_for() or late):
                    self._finish(gid, agg)
                elif late:
                    self._abandon(gid, agg, "too_few_reveals")
            elif not agg.waiting_for() or late:
                self._close(gid, agg, now)
        return self._drain()

    def _close(self, gid: int, agg: GroupAggregator, now: float) -> None:
        stage = agg.stage
        missing = agg.waiting_for()
        if missing:
            log.warning(
                "round %d group %d: %s stage closes without %s (deadline %.0f s)",
                self.round_id, gid, stage, missing, self.stage_s,
            )  # fmt: skip
        with self._group(gid):
            self._publish_close(gid, agg, stage)
        self._since[gid] = now

    def _publish_close(self, gid: int, agg: GroupAggregator, stage: str) -> None:
        method, leaf = _CLOSES[stage]
        out: Any = getattr(agg, method)()
        self._save(gid)
        if leaf is None:
            for node, msg in out.items():
                self._send(self.topics.secagg_shares(node), msg)
        else:
            self._send(self.topics.secagg_group(gid, leaf), out)

    def _finish(self, gid: int, agg: GroupAggregator) -> None:
        with self._group(gid):
            result = agg.finish()
            self._save(gid)
            if result.problem is not None:
                self._drop(gid, result.problem, "its unmasked mean fails the group checks")
                return
            self.results[gid] = result
            self._log_refusals(gid)
            log.info(
                "round %d group %d: unmasked the sum of %d nodes (lost %s)",
                self.round_id, gid, len(result.survivors), result.lost,
            )  # fmt: skip

    def _abandon(self, gid: int, agg: GroupAggregator, reason: str) -> None:
        agg.abandon(reason)
        self._save(gid)
        self._drop(gid, reason, f"stage {agg.stage} passed its deadline")

    @contextmanager
    def _group(self, gid: int) -> Any:
        """Run a close or finish of group ``gid``; a group below its threshold is dropped."""
        try:
            yield
        except SecAggError as exc:
            self._save(gid)
            self._drop(gid, exc.reason, exc.detail)

    def _drop(self, gid: int, reason: str, detail: str) -> None:
        self._log_refusals(gid)
        self.results[gid] = reason
        log.warning(
            "round %d group %d dropped (%s): %s; nothing of its sum is revealed",
            self.round_id, gid, reason, detail,
        )  # fmt: skip

    def _log_refusals(self, gid: int) -> None:
        agg = self.aggs.get(gid)
        if agg is not None and agg.refusals:
            log.warning(
                "round %d group %d refused: %s",
                self.round_id,
                gid,
                dict(sorted(agg.refusals.items())),
            )

    def _save(self, gid: int) -> None:
        agg = self.aggs.get(gid)
        if agg is not None:
            self.store.save_group(self.round_id, gid, agg.stage, agg.dump())

    def _send(self, topic: str, msg: Any) -> None:
        self._out.append(Publish(topic, to_json(sign_message(msg, self.keys.fleet)), True))

    def republish(self) -> list[Publish]:
        """After a restart or reconnect: the groups and each live group's current message."""
        if self.groups is None:
            return []
        if any(a.stage == "keys" for g, a in self.aggs.items() if g not in self.results):
            self._publish_groups()  # past the keys stage, nodes would only answer it again
        for gid, agg in self.aggs.items():
            if gid in self.results or agg.stage not in _CURRENT:
                continue
            with self._group(gid):
                self._publish_close(gid, agg, _CURRENT[agg.stage])
        return self._drain()

    # -- the end ------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.groups is not None and len(self.results) == len(self.groups)

    def finished_groups(self) -> list[GroupResult]:
        return [r for _g, r in sorted(self.results.items()) if isinstance(r, GroupResult)]

    def combine(
        self,
        base: Mapping[str, np.ndarray],
        spec: Mapping[str, WeightSpec],
        rule: Rule,
        fraction: float,
    ) -> Combined:
        """The central: ``rule`` over the finished groups' means (SHARE)."""
        dropped = {g: r for g, r in self.results.items() if isinstance(r, str)}
        return combine_groups(self.finished_groups(), dropped, base, spec, rule, fraction)


class SecureRounds:
    """The leader's secure rounds: the current one, made (or read back) by round id."""

    def __init__(
        self,
        cfg: SecureAggregationConfig,
        db: sqlite_utils.Database,
        topics: Topics,
        fleet_key: Ed25519PrivateKey | None,
        spec: Mapping[str, WeightSpec],
    ) -> None:
        self.cfg, self.topics = cfg, topics
        self.store = SecureStore(db)
        self.keys = Keys.load(cfg, fleet_key)
        self.length = sum(spec[n].size for n in trainable_names(dict(spec)))
        self._current: SecureRound | None = None

    def for_round(self, round_id: int) -> SecureRound:
        if self._current is None or self._current.round_id != round_id:
            self._current = SecureRound.open(
                round_id, self.cfg, self.length, self.store, self.topics, self.keys
            )
            self.store.forget_before(round_id)
        return self._current

    def reset(self, round_id: int) -> None:
        """Forget the round's secure state: reopened, it commits to a new seed."""
        self.store.reset(round_id)
        self._current = None
