"""Long-term node identities: an Ed25519 key per node, vouched for by the fleet.

Provisioning makes the key in ``add-node`` (:func:`make_identity`, :func:`save_identity`) and
signs a :class:`Voucher` binding the node id to the key's public half with the vouching key
(:func:`vouch`). The node keeps ``identity_key.pem`` (0600) and ``identity_voucher.json``; every
peer and the aggregator check a voucher with :func:`verify_voucher` against the vouching
public key and the fleet's revocation list (:class:`Revocations`, signed by the same key,
replaced by ``revoke-node``). Each round the identity key signs the node's ephemeral keys, bound
to the node id, the round and the group (:mod:`vfer.secagg.wire`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AfterValidator, Field

from vfer import signing
from vfer.atomic import atomic_write_bytes, atomic_write_text
from vfer.envelope import MAX_ID, MessageError, Signed, from_json, sign_message, verify_message
from vfer.secagg import primitives as p
from vfer.secagg.params import SecAggError
from vfer.topics import check_node_id

IDENTITY_KEY_NAME = "identity_key.pem"
VOUCHER_NAME = "identity_voucher.json"
#: Base64 of a raw 32-byte key.
B64Key = Annotated[str, Field(min_length=44, max_length=44)]
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
NodeId = Annotated[str, AfterValidator(check_node_id)]


class Voucher(Signed):
    """The fleet's signed statement: ``node_id`` holds the identity key ``identity_key``."""

    kind: Literal["voucher"] = "voucher"
    node_id: NodeId
    identity_key: B64Key = Field(description="base64 raw Ed25519 public key of the node")


class Revocations(Signed):
    """The identities revoked so far (fingerprints), signed; a higher ``serial`` replaces."""

    kind: Literal["revocations"] = "revocations"
    serial: int = Field(ge=0, le=MAX_ID)
    fingerprints: list[Hex64] = Field(default_factory=list, max_length=100_000)


def make_identity() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_identity(path: str | os.PathLike[str], key: Ed25519PrivateKey) -> None:
    """Write ``key`` as an unencrypted PKCS8 PEM, mode 0600 (atomically)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write_bytes(path, pem)
    os.chmod(path, 0o600)


def load_identity(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The identity key from its PEM (:class:`vfer.signing.KeyFileError` when unusable)."""
    return signing.load_private_key(path)


def fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey | bytes) -> str:
    """Hex SHA-256 of the raw public key: how revocation lists name an identity."""
    raw = key if isinstance(key, bytes) else p.ed25519_public_bytes(key)
    return hashlib.sha256(raw).hexdigest()


def vouch(
    vouching_key: Ed25519PrivateKey, node_id: str, identity: Ed25519PublicKey | bytes
) -> Voucher:
    """A voucher for ``node_id``'s identity public key, signed with ``vouching_key``."""
    raw = identity if isinstance(identity, bytes) else p.ed25519_public_bytes(identity)
    if len(raw) != p.KEY_BYTES:
        raise ValueError(f"identity key of {len(raw)} bytes, expected {p.KEY_BYTES}")
    return sign_message(Voucher(node_id=node_id, identity_key=p.b64(raw)), vouching_key)


def verify_voucher(
    voucher: Voucher,
    vouching_public: Ed25519PublicKey,
    revoked: frozenset[str] = frozenset(),
    node_id: str | None = None,
) -> Ed25519PublicKey:
    """The node's identity public key when ``voucher`` is signed, unrevoked and (when given)
    for ``node_id``. Reasons: ``bad_voucher``, ``revoked``, ``forged_node_id``."""
    if node_id is not None and voucher.node_id != node_id:
        raise SecAggError("forged_node_id", f"voucher of {voucher.node_id!r}, sent as {node_id!r}")
    try:
        verify_message(voucher, vouching_public, f"voucher of {voucher.node_id}")
        raw = p.unb64(voucher.identity_key, p.KEY_BYTES)
    except (MessageError, ValueError) as exc:
        raise SecAggError("bad_voucher", f"voucher of {voucher.node_id}: {exc}") from None
    if fingerprint(raw) in revoked:
        raise SecAggError("revoked", f"identity of {voucher.node_id} is revoked")
    return p.ed25519_public(raw)


def revoke(
    vouching_key: Ed25519PrivateKey, previous: Revocations | None, voucher: Voucher
) -> Revocations:
    """The revocation list with ``voucher``'s identity added and the serial raised, signed."""
    known = set(previous.fingerprints) if previous else set()
    known.add(fingerprint(p.unb64(voucher.identity_key, p.KEY_BYTES)))
    serial = previous.serial + 1 if previous else 1
    return sign_message(Revocations(serial=serial, fingerprints=sorted(known)), vouching_key)


def open_revocations(
    payload: bytes, vouching_public: Ed25519PublicKey, newer_than: int = -1
) -> Revocations:
    """A revocation list read from bytes, signature checked, refused unless its serial is
    above ``newer_than``. Reasons: those of :func:`vfer.messages.from_json`, ``unsigned``,
    ``bad_signature``, ``stale_revocations``."""
    rev = verify_message(from_json(payload, Revocations), vouching_public, "revocation list")
    if rev.serial <= newer_than:
        raise SecAggError("stale_revocations", f"serial {rev.serial} <= {newer_than}")
    return rev


def save_voucher(path: str | os.PathLike[str], voucher: Voucher) -> None:
    atomic_write_text(path, voucher.model_dump_json(by_alias=True) + "\n")


def load_voucher(path: str | os.PathLike[str]) -> Voucher:
    """A voucher file, shape checked (its signature is checked by :func:`verify_voucher`)."""
    try:
        return from_json(Path(path).read_bytes(), Voucher)
    except OSError as exc:
        raise signing.KeyFileError(f"cannot read voucher {path}: {exc.strerror or exc}") from exc
