"""An in-process secure round: N real NodeSessions and real GroupAggregators exchanging the real
serialized messages (JSON and frames), stage by stage, with hooks for dropouts and hostile
input. For tests and benchmarks; nothing here is used by the node or the aggregator.

Every payload the aggregator receives is kept in :attr:`Harness.seen` (what a curious
aggregator, or whoever holds its broker login, could record), and :attr:`Harness.states` holds
its serialized group states after every stage.
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from vfer.envelope import (
    MAGIC,
    MessageError,
    from_json,
    pack,
    sign_message,
    to_json,
)
from vfer.secagg import GroupAggregator, NodeSession, SecAggError, SecAggParams, quantize
from vfer.secagg import groups as grp
from vfer.secagg import identity as ident
from vfer.secagg.wire import GroupsMsg, Join, SecAggRound, check_join

#: A hook that may replace (or drop, returning None) a node's answer before it is sent.
Tamper = Callable[[str, str, Any], Any]


def node_id(i: int) -> str:
    return f"pi-{i:04d}"


@dataclass
class Harness:
    n: int
    params: SecAggParams
    round_id: int = 1
    seed: int = 0
    clips: dict[str, int] = field(default_factory=dict)
    updates: dict[str, np.ndarray] = field(default_factory=dict)
    seen: list[bytes] = field(default_factory=list)
    states: list[bytes] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    node_cpu: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    sizes: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.fleet_key = ident.make_identity()
        self.fleet_pub = self.fleet_key.public_key()
        self.ids = [node_id(i) for i in range(self.n)]
        L = self.params.vector_length
        for nid in self.ids:
            self.updates.setdefault(nid, rng.normal(0, 0.02, L).astype(np.float32))
        self.sessions: dict[str, NodeSession] = {}
        self.identities = {nid: ident.make_identity() for nid in self.ids}
        self.vouchers = {
            nid: ident.vouch(self.fleet_key, nid, k.public_key())
            for nid, k in self.identities.items()
        }
        self.group_seed = grp.new_seed()
        self.info = SecAggRound(
            params=self.params,
            group_seed_commitment=grp.commit_seed(self.round_id, self.group_seed),
        )
        self.aggs: dict[int, GroupAggregator] = {}
        self.alive: set[str] = set(self.ids)
        self.group_of: dict[str, int] = {}

    # -- driving ----------------------------------------------------------------------------

    def _node(self, nid: str, stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.process_time()
        try:
            return fn()
        finally:
            self.node_cpu[nid][stage] = time.process_time() - t0

    def _agg(self, what: str, fn: Callable[[], Any]) -> Any:
        t0 = time.process_time()
        try:
            return fn()
        finally:
            self.timings[what] += time.process_time() - t0

    def _send(self, nid: str, payload: bytes) -> bytes:
        """Record what node ``nid`` sent (its kind and size) and what the aggregator saw."""
        self.seen.append(payload)
        self.sizes[nid][f"sent {_kind(payload)}"] = len(payload)
        return payload

    def start(self) -> GroupsMsg:
        """Sessions built (updates encoded), joins checked, groups drawn and aggregators made."""
        for nid in self.ids:
            self.sessions[nid] = self._node(nid, "encode", lambda nid=nid: self._session(nid))
        joined = []
        for nid in self.ids:
            raw = self._send(nid, to_json(self._node(nid, "join", self.sessions[nid].join)))
            self._agg("join", lambda raw=raw, nid=nid: self._check_join(raw, nid))
            joined.append(nid)
        groups = self._agg(
            "join", lambda: grp.draw_groups(joined, self.group_seed, self.params.min_group_size)
        )
        self.groups_msg = sign_message(
            GroupsMsg(round_id=self.round_id, seed=self.group_seed.hex(), groups=groups),
            self.fleet_key,
        )
        for nid in joined:
            self.sizes[nid]["received secagg_groups"] = len(to_json(self.groups_msg))
        for gid, members in enumerate(groups):
            self.aggs[gid] = GroupAggregator.new(
                round_id=self.round_id, group_id=gid, members=members, params=self.params,
                vouching_public=self.fleet_pub,
            )  # fmt: skip
            for m in members:
                self.group_of[m] = gid
        return self.groups_msg

    def _check_join(self, raw: bytes, nid: str) -> None:
        check_join(
            from_json(raw, Join), nid, round_id=self.round_id, vouching_public=self.fleet_pub
        )

    def _session(self, nid: str) -> NodeSession:
        return NodeSession(
            node_id=nid,
            round_id=self.round_id,
            round_info=self.info,
            identity=self.identities[nid],
            voucher=self.vouchers[nid],
            vouching_public=self.fleet_pub,
            update=self.updates[nid],
            clips=self.clips.get(nid, 1),
            rng=self._rounding_rng(nid),
        )

    def _rounding_rng(self, nid: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(nid.encode())])

    def plaintext(self, nid: str) -> np.ndarray:
        """The node's encoded update (what its session masks), recomputed with the same rng."""
        w = quantize.node_weight(self.clips.get(nid, 1), self.params)
        return quantize.encode(self.updates[nid], w, self.params, self._rounding_rng(nid))

    def clipped(self, nid: str) -> np.ndarray:
        return quantize.clip(self.updates[nid], self.params)

    def stage(
        self,
        name: str,
        make: Callable[[str, Any], BaseModel | tuple[Any, bytes] | None],
        inbox: dict[str, Any],
        *,
        drop: Iterable[str] = (),
        tamper: Tamper | None = None,
        deliver: Tamper | None = None,
        label: str | None = None,
    ) -> None:
        """Every live node with a message in ``inbox`` answers it (``make``); the aggregator of
        its group receives the answer."""
        self.alive -= set(drop)
        for nid in sorted(self.alive & set(inbox)):
            msg = deliver(name, nid, inbox[nid]) if deliver is not None else inbox[nid]
            try:
                out = self._node(nid, label or name, lambda nid=nid, m=msg: make(nid, m))
            except SecAggError:
                self.alive.discard(nid)
                continue
            outs = tamper(name, nid, out) if tamper is not None else out
            for one in outs if isinstance(outs, list) else [outs]:
                if one is None:
                    continue
                raw = pack(*one) if isinstance(one, tuple) else to_json(one)
                self._send(nid, raw)
                agg = self.aggs[self.group_of[nid]]
                with contextlib.suppress(MessageError):  # refused: counted by the aggregator
                    self._agg(f"receive_{name}", lambda a=agg, r=raw, n=nid: a.receive(r, n))

    def checkpoint(self) -> None:
        """Serialize every group's state and resume from it (as after a restart)."""
        for gid, agg in list(self.aggs.items()):
            raw = agg.dump()
            self.states.append(raw)
            self.aggs[gid] = GroupAggregator.resume(raw, self.fleet_pub)

    def run(
        self,
        *,
        drop: dict[str, Iterable[str]] | None = None,
        tamper: Tamper | None = None,
        deliver: Tamper | None = None,
        checkpoint: bool = False,
    ) -> dict[int, Any]:
        """The whole round; returns group id -> GroupResult, or the SecAggError that ended it.

        ``drop``: stage -> nodes lost before answering it; ``tamper(stage, node, answer)``
        may replace a node's answer (a list: several messages from its topic);
        ``deliver(stage, node, message)`` may replace what the aggregator sends the node."""
        drop = drop or {}
        groups = self.start()
        s = self.sessions
        results: dict[int, Any] = {}
        inbox: dict[str, Any] = dict.fromkeys(self.ids, groups)
        for name, answer, close in _STAGES:
            self.stage(
                name,
                lambda n, m, answer=answer: answer(s[n], m),
                inbox,
                drop=drop.get(name, ()),
                tamper=tamper,
                deliver=deliver,
                label=answer.__name__,
            )
            if name == "unmask":
                break
            inbox = self._close(results, name, close)
            if checkpoint:
                self.checkpoint()
        for gid, agg in self.aggs.items():
            if gid in results:
                continue
            try:
                results[gid] = self._agg("finish", agg.finish)
            except SecAggError as exc:
                results[gid] = exc
            self.states.append(agg.dump())
        return results

    def _close(
        self, results: dict[int, Any], stage: str, close: Callable[[GroupAggregator], Any]
    ) -> dict[str, Any]:
        """Close the stage in every live group; what it returns goes to the members (by id)."""
        out: dict[str, Any] = {}
        for gid, agg in self.aggs.items():
            if gid in results:
                continue
            try:
                per_node = self._agg(f"close_{stage}", lambda agg=agg: close(agg))
            except SecAggError as exc:
                results[gid] = exc
                continue
            self.states.append(agg.dump())
            for nid, msg in per_node.items():
                raw = to_json(msg)
                self.sizes[nid][f"received {_kind(raw)}"] = len(raw)
                out[nid] = from_json(raw, type(msg))
        return out


#: stage: what nodes answer with, what the aggregator's close sends (node -> message)
_STAGES: list[tuple[str, Callable[..., Any], Callable[[GroupAggregator], dict[str, Any]]]] = [
    ("keys", NodeSession.on_groups, lambda a: _each(a.close_keys(), a.state.u1)),
    ("shares", NodeSession.on_keys, lambda a: a.close_shares()),
    ("masked", NodeSession.on_shares, lambda a: _each(a.close_masked(), a.state.u3)),
    ("consistency", NodeSession.on_survivors, lambda a: _each(a.close_consistency(), a.state.u4)),
    ("unmask", NodeSession.on_unmask, lambda a: {}),
]


def _each(msg: Any, members: list[str]) -> dict[str, Any]:
    return dict.fromkeys(members, msg)


def _kind(payload: bytes) -> str:
    """The ``kind`` of a JSON message or of a frame's header."""
    if payload.startswith(MAGIC):
        payload = payload[8 : 8 + int.from_bytes(payload[4:8], "big")]
    return str(json.loads(payload)["kind"])
