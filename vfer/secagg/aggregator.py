"""The aggregator's side of one group: :class:`GroupAggregator`, a state machine over
:class:`vfer.secagg.state.GroupState`.

The loop that drives it (MQTT, SQLite, deadlines) lives elsewhere and does three things:
hands each received message to ``receive_*`` with the topic's node id (a refusal raises
:class:`SecAggError`, already counted in ``refusals``; log it with the node id and go on),
closes a stage with ``close_*`` once :meth:`GroupAggregator.waiting_for` is empty or the stage's
deadline passed (it publishes what ``close_*`` returns), and stores :meth:`GroupAggregator.dump`
when it wants to survive a restart. Below the threshold a ``close_*`` abandons the group and
raises :class:`GroupAbandoned`: nothing of its sum is revealed, its shares are forgotten.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import contextmanager

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vfer.envelope import MAGIC, MAX_HEADER_BYTES, Message, MessageError, from_json, unpack
from vfer.secagg import groups as grp
from vfer.secagg import primitives as p
from vfer.secagg import quantize, unmask
from vfer.secagg.params import GroupAbandoned, SecAggError, SecAggParams
from vfer.secagg.state import GroupState, dump, load
from vfer.secagg.wire import (
    AdvertiseKeys,
    ConsistencySig,
    KeysBroadcast,
    MaskedInputHeader,
    ShareKeys,
    SharesForYou,
    SurvivorsMsg,
    UnmaskRequest,
    UnmaskShares,
    check_advert,
    check_consistency,
    check_share_keys,
)

GroupResult = unmask.GroupResult

#: kind -> (model, handler) of what nodes send (the masked input is a frame).
_INBOUND: dict[str, tuple[type[Message], str]] = {
    "secagg_keys": (AdvertiseKeys, "receive_keys"),
    "secagg_shares": (ShareKeys, "receive_shares"),
    "secagg_consistency": (ConsistencySig, "receive_consistency"),
    "secagg_revealed": (UnmaskShares, "receive_unmask"),
}


class GroupAggregator:
    """One group of one round on the aggregator (module docstring)."""

    def __init__(
        self,
        state: GroupState,
        total: np.ndarray | None,
        vouching_public: Ed25519PublicKey,
        revoked: frozenset[str] = frozenset(),
    ) -> None:
        self.state = state
        self._sum = total if total is not None else np.zeros(state.params.masked_length, np.uint32)
        self._vouching, self._revoked = vouching_public, revoked
        self._digest = grp.members_digest(state.round_id, state.group_id, state.members)
        self.t = state.params.threshold(len(state.members))
        self.result: GroupResult | None = None

    @classmethod
    def new(
        cls,
        *,
        round_id: int,
        group_id: int,
        members: list[str],
        params: SecAggParams,
        vouching_public: Ed25519PublicKey,
        revoked: frozenset[str] = frozenset(),
    ) -> GroupAggregator:
        state = GroupState(
            round_id=round_id, group_id=group_id, members=sorted(members), params=params
        )
        return cls(state, None, vouching_public, revoked)

    @classmethod
    def resume(
        cls, raw: bytes, vouching_public: Ed25519PublicKey, revoked: frozenset[str] = frozenset()
    ) -> GroupAggregator:
        """A group from :meth:`dump`'s bytes (``bad_state`` when unreadable: abandon it)."""
        state, total = load(raw)
        agg = cls(state, total, vouching_public, revoked)
        if state.stage == "done" and total is not None:
            agg.result = unmask.decode(state, total)
        return agg

    def dump(self) -> bytes:
        keep = self.state.stage not in ("abandoned",)
        return dump(self.state, self._sum if keep else None)

    @property
    def stage(self) -> str:
        return self.state.stage

    @property
    def refusals(self) -> Counter[str]:
        return Counter(self.state.refusals)

    def waiting_for(self) -> list[str]:
        """Members whose answer the current stage still waits for."""
        s = self.state
        table: dict[str, tuple[list[str], Collection[str]]] = {
            "keys": (s.members, s.keys),
            "shares": (s.u1, s.shares),
            "masked": (s.u2, s.uploaded),
            "consistency": (s.u3, s.signatures),
            "unmask": (s.u4, s.revealed),
        }
        expected, got = table.get(s.stage, ([], ()))
        return [n for n in expected if n not in got]

    def receive(self, payload: bytes, sender: str) -> None:
        """Any node-to-aggregator payload of this protocol, as it came off the wire from the
        topic of ``sender``: decoded (errors keep their reason codes: ``bad_header``,
        ``invalid_header``, ``wrong_kind``, ...), then handed to its ``receive_*``."""
        if payload.startswith(MAGIC):
            self.receive_masked_frame(payload, sender)
            return
        try:
            kind = json.loads(payload[:MAX_HEADER_BYTES]).get("kind")
        except (ValueError, AttributeError, RecursionError):
            kind = None
        model, handler = _INBOUND.get(kind, (AdvertiseKeys, "receive_keys"))  # type: ignore[arg-type]
        try:
            msg = from_json(payload, model)
        except MessageError as exc:
            self._count(exc.reason)
            raise
        getattr(self, handler)(msg, sender)

    # -- stage 1: keys ------------------------------------------------------------------------

    def receive_keys(self, msg: AdvertiseKeys, sender: str) -> None:
        with self._refusing():
            self._expect("keys", msg.round_id, msg.group_id, sender, msg.node_id, check_round=False)
            check_advert(
                msg,
                round_id=self.state.round_id,
                group_id=self.state.group_id,
                members=frozenset(self.state.members),
                members_sha256=self._digest,
                vouching_public=self._vouching,
                revoked=self._revoked,
            )
            if self._seen(self.state.keys, sender, msg):
                return
            if any(
                a.mask_key == msg.mask_key or a.share_key == msg.share_key
                for a in self.state.keys.values()
            ):
                raise SecAggError("duplicate_keys", f"{sender} reuses another member's key")
            self.state.keys[sender] = msg

    def close_keys(self) -> KeysBroadcast:
        s = self.state
        if s.stage == "keys":
            self._need(len(s.keys), "too_few_keys")
            s.u1, s.stage = sorted(s.keys), "shares"
        return KeysBroadcast(
            round_id=s.round_id, group_id=s.group_id, keys=[s.keys[n] for n in s.u1]
        )

    # -- stage 2: shares ----------------------------------------------------------------------

    def receive_shares(self, msg: ShareKeys, sender: str) -> None:
        with self._refusing():
            self._expect("shares", msg.round_id, msg.group_id, sender, msg.node_id)
            if sender not in self.state.u1:
                raise SecAggError("no_keys", f"{sender} advertised no keys")
            if self._seen(self.state.shares, sender, msg):
                return
            check_share_keys(msg, self.state.u1)
            self.state.shares[sender] = msg

    def close_shares(self) -> dict[str, SharesForYou]:
        s = self.state
        if s.stage == "shares":
            self._need(len(s.shares), "too_few_shares")
            s.u2, s.stage = sorted(s.shares), "masked"
        return {n: self.shares_for(n) for n in s.u2}

    def shares_for(self, node: str) -> SharesForYou:
        s = self.state
        mine = {u: s.shares[u].shares[node] for u in s.u2 if u != node}
        return SharesForYou(round_id=s.round_id, group_id=s.group_id, node_id=node, shares=mine)

    # -- stage 3: masked inputs ---------------------------------------------------------------

    def receive_masked_frame(self, payload: bytes, sender: str) -> None:
        """A masked input as it arrives (a frame); frame errors keep their reason codes."""
        try:
            header, body = unpack(payload, MaskedInputHeader)
        except MessageError as exc:
            self._count(exc.reason)
            raise
        self.receive_masked(header, body, sender)

    def receive_masked(self, header: MaskedInputHeader, body: bytes, sender: str) -> None:
        """A masked input as :func:`vfer.messages.unpack` returned it (checksum checked)."""
        with self._refusing():
            self._expect("masked", header.round_id, header.group_id, sender, header.node_id)
            if sender not in self.state.u2:
                raise SecAggError("no_shares", f"{sender} shared no keys")
            if header.modulus_bits != quantize.MODULUS_BITS:
                raise SecAggError(
                    "wrong_modulus", f"modulus 2^{header.modulus_bits}, the round uses 2^32"
                )
            want = self.state.params.masked_length
            if header.length != want or len(body) != 4 * want:
                raise SecAggError(
                    "wrong_length", f"{header.length} values / {len(body)} bytes, expected {want}"
                )
            digest = header.body_sha256  # checked against the body by unpack
            if sender in self.state.uploaded:
                if self.state.uploaded[sender] != digest:
                    raise SecAggError(
                        "conflicting", f"a second, different masked input from {sender}"
                    )
                return
            np.add(self._sum, np.frombuffer(body, dtype="<u4"), out=self._sum)
            self.state.uploaded[sender] = digest

    def close_masked(self) -> SurvivorsMsg:
        s = self.state
        if s.stage == "masked":
            self._need(len(s.uploaded), "too_few_inputs")
            s.u3, s.stage = sorted(s.uploaded), "consistency"
        return SurvivorsMsg(round_id=s.round_id, group_id=s.group_id, survivors=s.u3)

    # -- stage 4: consistency check -----------------------------------------------------------

    def receive_consistency(self, msg: ConsistencySig, sender: str) -> None:
        with self._refusing():
            s = self.state
            self._expect("consistency", msg.round_id, msg.group_id, sender, msg.node_id)
            if sender not in s.u3:
                raise SecAggError("not_a_survivor", f"{sender} uploaded nothing")
            if self._seen(s.signatures, sender, msg):
                return
            identity = p.ed25519_public(p.unb64(s.keys[sender].voucher.identity_key))
            check_consistency(
                msg, identity, round_id=s.round_id, group_id=s.group_id,
                members_sha256=self._digest, survivors=s.u3,
            )  # fmt: skip
            s.signatures[sender] = msg

    def close_consistency(self) -> UnmaskRequest:
        s = self.state
        if s.stage == "consistency":
            self._need(len(s.signatures), "too_few_signatures")
            s.u4, s.stage = sorted(s.signatures), "unmask"
        return UnmaskRequest(
            round_id=s.round_id,
            group_id=s.group_id,
            survivors=s.u3,
            signatures=[s.signatures[n] for n in s.u4],
            reveal_seed_of=s.u3,
            reveal_key_of=sorted(set(s.u2) - set(s.u3)),
        )

    # -- stage 5: unmasking -------------------------------------------------------------------

    def receive_unmask(self, msg: UnmaskShares, sender: str) -> None:
        with self._refusing():
            s = self.state
            self._expect("unmask", msg.round_id, msg.group_id, sender, msg.node_id)
            if sender not in s.u4:
                raise SecAggError("not_a_signer", f"{sender} did not sign the survivor list")
            if sender in s.revealed:
                return  # a redelivery; the first answer's verified shares stand
            lost = set(s.u2) - set(s.u3)
            if set(msg.seed_shares) & set(msg.key_shares):
                raise SecAggError("both_shares", f"{sender} revealed both shares of a peer")
            if not set(msg.seed_shares) <= set(s.u3) or not set(msg.key_shares) <= lost:
                raise SecAggError("malformed_share", "shares of nodes outside the request")
            seeds = self._verified(sender, "seed", msg.seed_shares)
            keys = self._verified(sender, "key", msg.key_shares)
            s.revealed[sender] = msg.model_copy(update={"seed_shares": seeds, "key_shares": keys})

    def _verified(self, holder: str, kind: str, shares: dict[str, str]) -> dict[str, str]:
        """The shares that match what their maker committed to; the others refused, counted."""
        good, refused = unmask.verified_shares(self.state, holder, kind, shares)
        for reason in refused:
            self._count(reason)
        return good

    def can_finish(self) -> bool:
        s = self.state
        if s.stage != "unmask":
            return False
        need = [("seed", o) for o in s.u3] + [("key", o) for o in sorted(set(s.u2) - set(s.u3))]
        return all(len(unmask.shares_of(s, kind, o)) >= self.t for kind, o in need)

    def finish(self) -> GroupResult:
        """Rebuild the secrets, unmask the sum, decode the group's mean. Abandons the group
        (``too_few_reveals``, ``inconsistent_shares``) when it cannot."""
        s = self.state
        if s.stage == "done" and self.result is not None:
            return self.result
        self._expect_stage("unmask")
        if not self.can_finish():
            self._abandon("too_few_reveals", f"fewer than {self.t} shares of some secret")
        seeds, keys = {}, {}
        for owner in s.u3:
            seeds[owner] = self._rebuild("seed", owner, unmask.seed_check(s, owner))
        for owner in sorted(set(s.u2) - set(s.u3)):
            keys[owner] = self._rebuild("key", owner, unmask.key_check(s, owner))
        self._sum = unmask.unmask(s, self._sum, seeds, keys)
        self.result = unmask.decode(s, self._sum)
        s.stage, s.problem, s.revealed = "done", self.result.problem, {}
        return self.result

    def _rebuild(self, kind: str, owner: str, check: object) -> bytes:
        secret = unmask.rebuild(unmask.shares_of(self.state, kind, owner), self.t, check)  # type: ignore[arg-type]
        if secret is None:
            self._abandon("inconsistent_shares", f"the {kind} of {owner} does not rebuild")
        return secret  # type: ignore[return-value]

    def abandon(self, reason: str) -> None:
        """Leave the group out (the loop's deadline with too few answers): nothing of its sum is
        revealed, its revealed shares and masked sum are forgotten."""
        s = self.state
        if s.stage in ("done", "abandoned"):
            return
        s.stage, s.abandoned, s.revealed = "abandoned", reason, {}
        self._sum = np.zeros(s.params.masked_length, np.uint32)

    # -- helpers ------------------------------------------------------------------------------

    def _abandon(self, reason: str, detail: str) -> None:
        self.abandon(reason)
        raise GroupAbandoned(reason, f"group {self.state.group_id}: {detail}")

    def _need(self, count: int, reason: str) -> None:
        if count < self.t:
            self._abandon(reason, f"{count} answers, threshold {self.t}")

    def _expect_stage(self, stage: str) -> None:
        if self.state.stage != stage:
            reason = "abandoned" if self.state.stage == "abandoned" else "wrong_stage"
            raise SecAggError(
                reason, f"group {self.state.group_id} is at {self.state.stage}, not {stage}"
            )

    def _expect(
        self,
        stage: str,
        round_id: int,
        group_id: int,
        sender: str,
        node_id: str,
        *,
        check_round: bool = True,
    ) -> None:
        s = self.state
        if node_id != sender:
            raise SecAggError("forged_node_id", f"message says {node_id!r}, topic says {sender!r}")
        if sender not in s.members:
            raise SecAggError("not_in_group", f"{sender} is not in group {s.group_id}")
        if check_round and (round_id, group_id) != (s.round_id, s.group_id):
            raise SecAggError(
                "wrong_round",
                f"round {round_id} group {group_id}, expected {s.round_id} {s.group_id}",
            )
        self._expect_stage(stage)

    @staticmethod
    def _seen(store: dict, sender: str, msg: object) -> bool:  # type: ignore[type-arg]
        """True for a redelivery of the accepted message; another one is ``conflicting``."""
        if sender not in store:
            return False
        if store[sender] != msg:
            raise SecAggError("conflicting", f"a second, different message from {sender}")
        return True

    def _count(self, reason: str) -> None:
        self.state.refusals[reason] = self.state.refusals.get(reason, 0) + 1

    @contextmanager
    def _refusing(self) -> Iterator[None]:
        try:
            yield
        except SecAggError as exc:
            self._count(exc.reason)
            raise
