"""The secure-aggregation messages, stage by stage, as bounded pydantic models.

Every model has ``schema`` and ``kind`` like the rest of the protocol (:mod:`vfer.messages`):
decode with ``vfer.messages.from_json(payload, Model)`` (the masked input is a frame:
``vfer.messages.unpack(payload, MaskedInputHeader)``). Node-signed messages carry
``signature``: base64 Ed25519 by the node's identity key over the canonical JSON of the other
fields (:func:`vfer.messages.sign_message`). Aggregator-to-node messages have a ``signature``
for the fleet key, as every aggregator message does; what nodes rely on is inside them.

Stages (docs/secure-aggregation.md has the picture and examples):
0. ``Join`` -> aggregator; ``GroupsMsg`` (seed revealed, groups) -> every participant
1. ``AdvertiseKeys`` -> aggregator; ``KeysBroadcast`` -> the group
2. ``ShareKeys`` -> aggregator; ``SharesForYou`` -> each member
3. masked input (frame: ``MaskedInputHeader`` + uint32 body) -> aggregator; ``SurvivorsMsg`` -> the group
4. ``ConsistencySig`` -> aggregator; ``UnmaskRequest`` -> the signers
5. ``UnmaskShares`` -> aggregator; the group's sum is rebuilt
"""

from __future__ import annotations

import functools
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from vfer.envelope import MAX_ID, Framed, Message, MessageError, Signed, verify_message
from vfer.secagg import primitives as p
from vfer.secagg.identity import B64Key, Hex64, NodeId, Voucher, verify_voucher
from vfer.secagg.params import MAX_GROUP, MAX_VECTOR, SecAggError, SecAggParams
from vfer.secagg.shamir import SHARE_BYTES

RoundId = int
GroupId = int
_ROUND = Field(ge=1, le=MAX_ID)
_GROUP = Field(ge=0, le=MAX_ID)
#: Ciphertext of a seed share and a key share (2 x 66 bytes) plus the Poly1305 tag.
SEALED_BYTES = 2 * SHARE_BYTES + p.AEAD_TAG_BYTES
_SEALED_B64 = 4 * ((SEALED_BYTES + 2) // 3)
_SHARE_B64 = 4 * ((SHARE_BYTES + 2) // 3)
Members = list[NodeId]


class SecAggRound(BaseModel):
    """What the signed round message carries when secure aggregation is on."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    params: SecAggParams
    group_seed_commitment: Hex64 = Field(description="commit_seed(round_id, seed)")


class Join(Signed):
    """Stage 0, node -> aggregator: the node takes part in this round (identity-signed)."""

    kind: Literal["secagg_join"] = "secagg_join"
    round_id: int = _ROUND
    node_id: NodeId
    voucher: Voucher


class GroupsMsg(Signed):
    """Stage 0, aggregator -> all: the revealed seed and the groups drawn with it."""

    kind: Literal["secagg_groups"] = "secagg_groups"
    round_id: int = _ROUND
    seed: Hex64
    groups: list[Members] = Field(max_length=MAX_ID)


class AdvertiseKeys(Signed):
    """Stage 1, node -> aggregator: two X25519 public keys for this round and group, and a
    commitment to the self-mask seed, signed by the identity key."""

    kind: Literal["secagg_keys"] = "secagg_keys"
    round_id: int = _ROUND
    group_id: int = _GROUP
    members_sha256: Hex64 = Field(description="groups.members_digest of the group")
    node_id: NodeId
    voucher: Voucher
    share_key: B64Key = Field(description="X25519 public key that encrypts shares to this node")
    mask_key: B64Key = Field(description="X25519 public key of the pairwise masks")
    seed_commitment: Hex64 = Field(description="digest of the self-mask seed")


class KeysBroadcast(Signed):
    """Stage 1, aggregator -> group: every accepted advertisement."""

    kind: Literal["secagg_key_list"] = "secagg_key_list"
    round_id: int = _ROUND
    group_id: int = _GROUP
    keys: list[AdvertiseKeys] = Field(max_length=MAX_GROUP)


class EncryptedShare(BaseModel):
    """Shares of the sender's seed and mask key for one peer, sealed to that peer, and a
    commitment to each share (the aggregator checks revealed shares against them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ciphertext: str = Field(min_length=_SEALED_B64, max_length=_SEALED_B64)
    seed_share_commitment: Hex64
    key_share_commitment: Hex64


class ShareKeys(Message):
    """Stage 2, node -> aggregator: one sealed share pair for every other advertised member."""

    kind: Literal["secagg_shares"] = "secagg_shares"
    round_id: int = _ROUND
    group_id: int = _GROUP
    node_id: NodeId
    shares: dict[NodeId, EncryptedShare] = Field(max_length=MAX_GROUP)
    own_seed_share_commitment: Hex64 = Field(description="commitment to the share it keeps")
    own_key_share_commitment: Hex64


class SharesForYou(Signed):
    """Stage 2, aggregator -> one member: the sealed shares every sender made for it."""

    kind: Literal["secagg_your_shares"] = "secagg_your_shares"
    round_id: int = _ROUND
    group_id: int = _GROUP
    node_id: NodeId = Field(description="the addressee")
    shares: dict[NodeId, EncryptedShare] = Field(
        description="sender -> share", max_length=MAX_GROUP
    )


class MaskedInputHeader(Framed):
    """Stage 3, node -> aggregator (a frame): the body is ``length`` little-endian uint32."""

    kind: Literal["secagg_masked"] = "secagg_masked"
    round_id: int = _ROUND
    group_id: int = _GROUP
    node_id: NodeId
    length: int = Field(ge=1, le=MAX_VECTOR + 1)
    modulus_bits: int = Field(ge=1, le=64)


class SurvivorsMsg(Signed):
    """Stage 3, aggregator -> group: who uploaded a masked input (U3)."""

    kind: Literal["secagg_survivors"] = "secagg_survivors"
    round_id: int = _ROUND
    group_id: int = _GROUP
    survivors: Members = Field(max_length=MAX_GROUP)


class ConsistencySig(Signed):
    """Stage 4, node -> aggregator: the node's identity signature over the survivor list."""

    kind: Literal["secagg_consistency"] = "secagg_consistency"
    round_id: int = _ROUND
    group_id: int = _GROUP
    members_sha256: Hex64
    node_id: NodeId
    survivors: Members = Field(max_length=MAX_GROUP)


class UnmaskRequest(Signed):
    """Stage 4, aggregator -> signers: the signed list, and which shares to reveal."""

    kind: Literal["secagg_unmask"] = "secagg_unmask"
    round_id: int = _ROUND
    group_id: int = _GROUP
    survivors: Members = Field(max_length=MAX_GROUP)
    signatures: list[ConsistencySig] = Field(max_length=MAX_GROUP)
    reveal_seed_of: Members = Field(max_length=MAX_GROUP, description="survivors")
    reveal_key_of: Members = Field(max_length=MAX_GROUP, description="lost after sharing")


class UnmaskShares(Message):
    """Stage 5, node -> aggregator: seed shares of survivors, key shares of the lost."""

    kind: Literal["secagg_revealed"] = "secagg_revealed"
    round_id: int = _ROUND
    group_id: int = _GROUP
    node_id: NodeId
    seed_shares: dict[NodeId, str] = Field(max_length=MAX_GROUP)
    key_shares: dict[NodeId, str] = Field(max_length=MAX_GROUP)


@functools.cache
def _probe() -> X25519PrivateKey:
    """A throwaway key to test advertised keys with (any key finds a low-order point)."""
    return p.new_x25519()


def share_b64_ok(text: str) -> bool:
    return len(text) == _SHARE_B64


def check_join(
    join: Join,
    sender: str,
    *,
    round_id: int,
    vouching_public: Ed25519PublicKey,
    revoked: frozenset[str] = frozenset(),
) -> Ed25519PublicKey:
    """The joiner's identity key when ``join`` (from the topic of ``sender``) is for this round,
    vouched for and signed by it. Reasons: ``forged_node_id``, ``wrong_round``,
    ``bad_voucher``, ``revoked``, ``unsigned``, ``bad_signature``."""
    if join.node_id != sender:
        raise SecAggError("forged_node_id", f"join of {join.node_id!r} from {sender!r}")
    if join.round_id != round_id:
        raise SecAggError("wrong_round", f"join for round {join.round_id}, open is {round_id}")
    identity = verify_voucher(join.voucher, vouching_public, revoked, sender)
    try:
        verify_message(join, identity, f"join of {sender}")
    except MessageError as exc:
        raise SecAggError(exc.reason, exc.detail) from None
    return identity


def check_advert(
    advert: AdvertiseKeys,
    *,
    round_id: int,
    group_id: int,
    members: frozenset[str],
    members_sha256: str,
    vouching_public: Ed25519PublicKey,
    revoked: frozenset[str],
) -> Ed25519PublicKey:
    """The sender's identity key when ``advert`` is valid for this round and group.

    Reasons: ``replayed_keys`` (another round or group), ``not_in_group``, ``bad_voucher``,
    ``revoked``, ``forged_node_id`` (voucher of another node), ``bad_signature``, ``bad_key``."""
    if (advert.round_id, advert.group_id, advert.members_sha256) != (
        round_id,
        group_id,
        members_sha256,
    ):
        raise SecAggError(
            "replayed_keys", f"keys for round {advert.round_id} group {advert.group_id}"
        )
    if advert.node_id not in members:
        raise SecAggError("not_in_group", f"{advert.node_id} is not in group {group_id}")
    identity = verify_voucher(advert.voucher, vouching_public, revoked, advert.node_id)
    try:
        verify_message(advert, identity, f"keys of {advert.node_id}")
    except MessageError as exc:
        raise SecAggError("bad_signature", exc.detail) from None
    try:
        for key in (advert.share_key, advert.mask_key):  # a low-order point agrees to zeros
            p.agree(_probe(), p.unb64(key, p.KEY_BYTES))
    except ValueError as exc:
        raise SecAggError("bad_key", f"keys of {advert.node_id}: {exc}") from None
    return identity


def check_share_keys(msg: ShareKeys, u1: list[str]) -> None:
    """One sealed pair of the right size for every other advertised member, no more:
    ``malformed_shares`` otherwise."""
    if set(msg.shares) != set(u1) - {msg.node_id}:
        raise SecAggError("malformed_shares", f"shares for {sorted(msg.shares)[:5]}, not the group")
    for peer, sealed in msg.shares.items():
        try:
            ok = len(p.unb64(sealed.ciphertext)) == SEALED_BYTES
        except ValueError:
            ok = False
        if not ok:
            raise SecAggError("malformed_shares", f"share for {peer} is not {SEALED_BYTES} bytes")


def check_consistency(
    sig: ConsistencySig,
    identity: Ed25519PublicKey,
    *,
    round_id: int,
    group_id: int,
    members_sha256: str,
    survivors: list[str],
) -> None:
    """``sig`` signs exactly this survivor list for this round and group, by its node.

    Reasons: ``wrong_survivors`` (another list, round or group), ``unsigned``,
    ``bad_signature``."""
    if (sig.round_id, sig.group_id, sig.members_sha256, sig.survivors) != (
        round_id,
        group_id,
        members_sha256,
        survivors,
    ):
        raise SecAggError("wrong_survivors", f"{sig.node_id} signed another survivor list")
    try:
        verify_message(sig, identity, f"survivor list of {sig.node_id}")
    except MessageError as exc:
        raise SecAggError(exc.reason, exc.detail) from None
