"""The node's side of one secure round: one :class:`NodeSession` per node per round.

Each ``on_*`` method takes the aggregator's message of a stage and returns the node's answer
(typed; nothing is sent from here). A message the node refuses raises :class:`SecAggError`
with a named reason; a bad part of a good message (one peer's keys, one peer's share) is
refused alone, counted in :attr:`NodeSession.refusals`, and the stage goes on. The same
message delivered twice gets the same answer (MQTT QoS 1 redelivers).

The session's secrets (two X25519 keys, the self-mask seed, the shares it holds, the encoded
update) live only in this object: it is never serialized, so a node restarted mid-round is a
dropout for its group (its masks are removed, or its upload still counts).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel

from vfer.envelope import MessageError, sign_message
from vfer.secagg import groups as grp
from vfer.secagg import masks, quantize, shamir
from vfer.secagg import primitives as p
from vfer.secagg.identity import Voucher
from vfer.secagg.params import SecAggError
from vfer.secagg.wire import (
    AdvertiseKeys,
    ConsistencySig,
    EncryptedShare,
    GroupsMsg,
    Join,
    KeysBroadcast,
    MaskedInputHeader,
    SecAggRound,
    ShareKeys,
    SharesForYou,
    SurvivorsMsg,
    UnmaskRequest,
    UnmaskShares,
    check_advert,
    check_consistency,
)

_STAGES = ("groups", "keys", "shares", "survivors", "unmask")


@dataclass
class _Group:
    group_id: int
    members: list[str]
    digest: str
    t: int

    def x_of(self, node: str) -> int:
        """A member's Shamir x: its 1-based position in the sorted group."""
        return self.members.index(node) + 1


@dataclass
class _Peers:
    """What the node learned in stages 1-2 (U1 with keys, U2, the valid shares it holds)."""

    identity: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    share_key: dict[str, bytes] = field(default_factory=dict)
    mask_key: dict[str, bytes] = field(default_factory=dict)
    u2: list[str] = field(default_factory=list)
    held: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)


class NodeSession:
    """One node in one secure round (module docstring). Build it once the update is ready."""

    def __init__(
        self,
        *,
        node_id: str,
        round_id: int,
        round_info: SecAggRound,
        identity: Ed25519PrivateKey,
        voucher: Voucher,
        vouching_public: Ed25519PublicKey,
        update: np.ndarray,
        clips: int = 1,
        revoked: frozenset[str] = frozenset(),
        rng: np.random.Generator | None = None,
    ) -> None:
        self.node_id, self.round_id, self.info = node_id, round_id, round_info
        self.params = round_info.params
        self._identity, self._voucher = identity, voucher
        self._vouching, self._revoked = vouching_public, revoked
        weight = quantize.node_weight(clips, self.params)
        self._plain = quantize.encode(update, weight, self.params, rng or np.random.default_rng())
        self._mask_sk, self._share_sk = p.new_x25519(), p.new_x25519()
        self._seed = grp.new_seed()
        self._group: _Group | None = None
        self._peers = _Peers()
        self._advert: AdvertiseKeys | None = None
        self._signed: ConsistencySig | None = None
        self._answers: dict[str, tuple[str, object]] = {}
        self._revealed: dict[str, str] = {}  # peer -> "seed" | "key": never both
        self.refusals: Counter[str] = Counter()

    # -- stage 0 ----------------------------------------------------------------------------

    def join(self) -> Join:
        msg = Join(round_id=self.round_id, node_id=self.node_id, voucher=self._voucher)
        return sign_message(msg, self._identity)

    def on_groups(self, msg: GroupsMsg) -> AdvertiseKeys:
        return self._once("groups", msg, self._advertise)  # type: ignore[return-value]

    def _advertise(self, msg: GroupsMsg) -> AdvertiseKeys:
        self._check_round(msg.round_id)
        seed = bytes.fromhex(msg.seed)
        if grp.commit_seed(self.round_id, seed) != self.info.group_seed_commitment:
            raise SecAggError("bad_group_seed", "the seed is not the one the round committed to")
        people = [n for g in msg.groups for n in g]
        if msg.groups != grp.draw_groups(people, seed, self.params.min_group_size):
            raise SecAggError("wrong_groups", "the groups are not those the seed draws")
        mine = [(gid, g) for gid, g in enumerate(msg.groups) if self.node_id in g]
        if len(mine) != 1:
            raise SecAggError("not_in_group", f"{self.node_id} is in {len(mine)} groups")
        gid, members = mine[0]
        self._group = _Group(
            gid,
            members,
            grp.members_digest(self.round_id, gid, members),
            self.params.threshold(len(members)),
        )
        advert = AdvertiseKeys(
            round_id=self.round_id,
            group_id=gid,
            members_sha256=self._group.digest,
            node_id=self.node_id,
            voucher=self._voucher,
            share_key=p.b64(p.x25519_public_bytes(self._share_sk)),
            mask_key=p.b64(p.x25519_public_bytes(self._mask_sk)),
            seed_commitment=masks.seed_commitment(self.round_id, gid, self.node_id, self._seed),
        )
        self._advert = sign_message(advert, self._identity)
        return self._advert

    # -- stage 1: keys -> shares --------------------------------------------------------------

    def on_keys(self, msg: KeysBroadcast) -> ShareKeys:
        return self._once("keys", msg, self._share)  # type: ignore[return-value]

    def _share(self, msg: KeysBroadcast) -> ShareKeys:
        g = self._in_group(msg.round_id, msg.group_id)
        peers = _Peers()  # kept only if the list is good enough to deal shares to
        for advert in msg.keys:
            try:
                if advert.node_id in peers.identity:
                    raise SecAggError("duplicate", f"keys of {advert.node_id} twice")
                if advert.node_id == self.node_id and advert != self._advert:
                    raise SecAggError("forged_keys", "my own keys came back altered")
                ident = check_advert(
                    advert,
                    round_id=self.round_id,
                    group_id=g.group_id,
                    members=frozenset(g.members),
                    members_sha256=g.digest,
                    vouching_public=self._vouching,
                    revoked=self._revoked,
                )
                if advert.mask_key in peers.mask_key.values():
                    raise SecAggError("duplicate_keys", f"{advert.node_id} reuses a mask key")
            except SecAggError as exc:
                self.refusals[exc.reason] += 1
                continue
            peers.identity[advert.node_id] = ident
            peers.share_key[advert.node_id] = p.unb64(advert.share_key)
            peers.mask_key[advert.node_id] = p.unb64(advert.mask_key)
        if self.node_id not in peers.identity:
            raise SecAggError("missing_own_keys", "my keys are not in the group's list")
        if len(peers.identity) < g.t:
            raise SecAggError("too_few_keys", f"{len(peers.identity)} keys, threshold {g.t}")
        self._peers = peers
        return self._deal(g)

    def _deal(self, g: _Group) -> ShareKeys:
        """Shamir-share the seed and the mask key to every member with keys (x = position)."""
        n = len(g.members)
        seeds = shamir.split(self._seed, n, g.t)
        keys = shamir.split(p.x25519_private_bytes(self._mask_sk), n, g.t)
        sealed = {}
        for peer in sorted(self._peers.identity):
            x = g.x_of(peer)
            seed_share, key_share = shamir.share_bytes(seeds[x]), shamir.share_bytes(keys[x])
            if peer != self.node_id:
                ids = (self.round_id, g.group_id, self.node_id, peer)
                sealed[peer] = masks.seal_shares(
                    self._share_sk, self._peers.share_key[peer], ids, seed_share, key_share
                )
        own = (self.round_id, g.group_id, self.node_id, self.node_id)
        x = g.x_of(self.node_id)
        seed_share, key_share = shamir.share_bytes(seeds[x]), shamir.share_bytes(keys[x])
        self._peers.held[self.node_id] = (seed_share, key_share)
        return ShareKeys(
            round_id=self.round_id,
            group_id=g.group_id,
            node_id=self.node_id,
            shares=sealed,
            own_seed_share_commitment=masks.share_commitment("seed-share", *own, seed_share),
            own_key_share_commitment=masks.share_commitment("key-share", *own, key_share),
        )

    # -- stage 2: shares -> masked input ------------------------------------------------------

    def on_shares(self, msg: SharesForYou) -> tuple[MaskedInputHeader, bytes]:
        return self._once("shares", msg, self._mask)  # type: ignore[return-value]

    def _mask(self, msg: SharesForYou) -> tuple[MaskedInputHeader, bytes]:
        g = self._in_group(msg.round_id, msg.group_id)
        if msg.node_id != self.node_id:
            raise SecAggError("not_for_me", f"shares addressed to {msg.node_id}")
        u2 = [self.node_id]
        for sender, sealed in sorted(msg.shares.items()):
            if sender not in self._peers.identity or sender == self.node_id:
                self.refusals["not_a_peer"] += 1
                continue
            u2.append(sender)  # the aggregator counts it: its pairwise mask is in, good or bad
            self._take_share(g, sender, sealed)
        if len(u2) < g.t:
            raise SecAggError("too_few_shares", f"{len(u2)} members shared, threshold {g.t}")
        self._peers.u2 = sorted(u2)
        return self._masked(g)

    def _take_share(self, g: _Group, sender: str, sealed: EncryptedShare) -> None:
        ids = (self.round_id, g.group_id, sender, self.node_id)
        opened = masks.open_shares(self._share_sk, self._peers.share_key[sender], ids, sealed)
        if opened is None:
            self.refusals["bad_share"] += 1
            return
        seed_share, key_share = opened
        ok = masks.share_commitment("seed-share", *ids, seed_share) == sealed.seed_share_commitment
        ok &= masks.share_commitment("key-share", *ids, key_share) == sealed.key_share_commitment
        if not ok:
            self.refusals["wrong_share"] += 1
            return
        self._peers.held[sender] = (seed_share, key_share)

    def _masked(self, g: _Group) -> tuple[MaskedInputHeader, bytes]:
        n = self.params.masked_length
        y = self._plain.copy()
        np.add(y, masks.self_mask(self._seed, self.round_id, g.group_id, self.node_id, n), out=y)
        for peer in self._peers.u2:
            if peer != self.node_id:
                mask = masks.pairwise_mask(
                    self._mask_sk, self._peers.mask_key[peer], self.round_id, g.group_id,
                    self.node_id, peer, n,
                )  # fmt: skip
                masks.add_pairwise(y, mask, self.node_id, peer)
        body = y.astype("<u4", copy=False).tobytes()
        header = MaskedInputHeader(
            round_id=self.round_id,
            group_id=g.group_id,
            node_id=self.node_id,
            length=n,
            modulus_bits=quantize.MODULUS_BITS,
        )
        return header, body

    # -- stage 3-4: consistency check, unmasking ---------------------------------------------

    def on_survivors(self, msg: SurvivorsMsg) -> ConsistencySig:
        return self._once(  # type: ignore[return-value]
            "survivors", msg, self._sign_survivors, conflict="conflicting_survivors"
        )

    def _sign_survivors(self, msg: SurvivorsMsg) -> ConsistencySig:
        g = self._in_group(msg.round_id, msg.group_id)
        u3 = msg.survivors
        if (
            u3 != sorted(set(u3))
            or not set(u3) <= set(self._peers.u2)
            or self.node_id not in u3
            or len(u3) < g.t
        ):
            raise SecAggError("bad_survivors", f"survivor list {u3[:5]} fails the checks")
        sig = ConsistencySig(
            round_id=self.round_id,
            group_id=g.group_id,
            members_sha256=g.digest,
            node_id=self.node_id,
            survivors=u3,
        )
        self._signed = sign_message(sig, self._identity)
        return self._signed

    def on_unmask(self, msg: UnmaskRequest) -> UnmaskShares:
        return self._once("unmask", msg, self._reveal, conflict=None)  # type: ignore[return-value]

    def _reveal(self, msg: UnmaskRequest) -> UnmaskShares:
        g = self._in_group(msg.round_id, msg.group_id)
        signed = self._signed
        if signed is None or msg.survivors != signed.survivors:
            raise SecAggError("conflicting_survivors", "not the survivor list this node signed")
        self._check_signatures(g, msg)
        seed_of, key_of = set(msg.reveal_seed_of), set(msg.reveal_key_of)
        if seed_of & key_of or key_of & set(msg.survivors):
            raise SecAggError("both_shares", f"asked both shares of {sorted(seed_of | key_of)[:5]}")
        if not seed_of <= set(msg.survivors) or not key_of <= set(self._peers.u2):
            raise SecAggError("not_a_peer", "asked for shares of nodes outside the lists")
        for peer, kind in [*((s, "seed") for s in seed_of), *((k, "key") for k in key_of)]:
            if self._revealed.get(peer, kind) != kind:
                raise SecAggError("both_shares", f"the other share of {peer} was revealed")
        held = self._peers.held
        out = UnmaskShares(
            round_id=self.round_id,
            group_id=g.group_id,
            node_id=self.node_id,
            seed_shares={s: p.b64(held[s][0]) for s in sorted(seed_of) if s in held},
            key_shares={k: p.b64(held[k][1]) for k in sorted(key_of) if k in held},
        )
        self._revealed.update(dict.fromkeys(out.seed_shares, "seed"))
        self._revealed.update(dict.fromkeys(out.key_shares, "key"))
        return out

    def _check_signatures(self, g: _Group, msg: UnmaskRequest) -> None:
        """At least t distinct survivors signed exactly this list (the consistency check)."""
        if not msg.signatures:
            raise SecAggError("unsigned_survivors", "the survivor list carries no signatures")
        good: set[str] = set()
        for sig in msg.signatures:
            ident = self._peers.identity.get(sig.node_id)
            try:
                if ident is None or sig.node_id not in msg.survivors:
                    raise SecAggError("not_a_peer", f"signature of {sig.node_id}")
                check_consistency(
                    sig, ident, round_id=self.round_id, group_id=g.group_id,
                    members_sha256=g.digest, survivors=msg.survivors,
                )  # fmt: skip
            except SecAggError as exc:
                self.refusals[f"survivors_{exc.reason}"] += 1
                continue
            good.add(sig.node_id)
        if len(good) < g.t:
            raise SecAggError(
                "too_few_signatures", f"{len(good)} valid signatures, threshold {g.t}"
            )

    # -- helpers ------------------------------------------------------------------------------

    def _once(
        self,
        stage: str,
        msg: BaseModel,
        answer: Callable[[Any], object],
        conflict: str | None = "conflicting",
    ) -> object:
        """Answer a stage's message once, in stage order; the same message again gets the same
        answer; another one for an answered stage is refused as ``conflict`` (None: it is
        checked afresh). Every refusal is counted."""
        key = hashlib.sha256(msg.model_dump_json().encode()).hexdigest()
        try:
            before = _STAGES[_STAGES.index(stage) - 1] if stage != _STAGES[0] else None
            if before is not None and before not in self._answers:
                raise SecAggError("wrong_stage", f"a {stage} message before the {before} one")
            if stage in self._answers:
                seen, out = self._answers[stage]
                if seen == key:
                    return out
                if conflict is not None:
                    raise SecAggError(conflict, f"a second, different {stage} message")
            out = answer(msg)
        except MessageError as exc:
            self.refusals[exc.reason] += 1
            raise
        self._answers[stage] = (key, out)
        return out

    def _check_round(self, round_id: int) -> None:
        if round_id != self.round_id:
            raise SecAggError("wrong_round", f"round {round_id}, this session is {self.round_id}")

    def _in_group(self, round_id: int, group_id: int) -> _Group:
        self._check_round(round_id)
        if self._group is None:
            raise SecAggError("wrong_stage", "no group yet: the groups message comes first")
        if group_id != self._group.group_id:
            raise SecAggError(
                "wrong_group", f"group {group_id}, this node is in {self._group.group_id}"
            )
        return self._group
