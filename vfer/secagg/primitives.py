"""The cryptographic building blocks of secure aggregation, each one call into ``cryptography``.

* X25519 key agreement, HKDF-SHA256 with a domain-separated ``info`` that names the protocol
  version, the round, the group and the node ids, so no key is ever used for two purposes;
* ChaCha20 as the mask stream: the key stream of an all-zero plaintext, read as little-endian
  uint32 (each key is used for one stream only, so the nonce is fixed);
* ChaCha20-Poly1305 for the shares travelling through the aggregator (one key per sender,
  receiver and round: a fixed nonce is safe);
* Ed25519 signatures and SHA-256 commitments over canonical bytes.

No clock, no I/O. Raw keys travel as base64 text (:func:`b64`, :func:`unb64`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Domain separation prefix of every derived key, commitment and signed statement.
DOMAIN = b"fedvfer-secagg-v1"
KEY_BYTES = 32
SIGNATURE_BYTES = 64
AEAD_TAG_BYTES = 16
_ZERO_NONCE16 = bytes(16)
_ZERO_NONCE12 = bytes(12)
_RAW = serialization.Encoding.Raw


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, size: int | None = None) -> bytes:
    """Strict base64 decode; ``size`` the exact number of bytes expected. ValueError otherwise."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if size is not None and len(raw) != size:
        raise ValueError(f"{len(raw)} bytes, expected {size}")
    return raw


def context(*parts: str | int | bytes) -> bytes:
    """Unambiguous bytes naming a use: the domain, then each part length-prefixed."""
    out = bytearray(DOMAIN)
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def canonical(data: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, no spaces): what a signature covers."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def digest(*parts: str | int | bytes) -> str:
    """Hex SHA-256 of :func:`context` of ``parts``: commitments and list digests."""
    return hashlib.sha256(context(*parts)).hexdigest()


def hkdf(secret: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


# -- X25519 -------------------------------------------------------------------------------------


def new_x25519() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def x25519_private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def x25519_public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes(_RAW, serialization.PublicFormat.Raw)


def x25519_from_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The X25519 shared secret with ``peer_public`` (raw 32 bytes). ValueError if degenerate."""
    return private.exchange(X25519PublicKey.from_public_bytes(peer_public))


# -- the mask stream ---------------------------------------------------------------------------


def mask_stream(key: bytes, length: int) -> np.ndarray:
    """``length`` uint32 values of the ChaCha20 key stream under ``key`` (a fresh 32-byte key)."""
    enc = Cipher(algorithms.ChaCha20(key, _ZERO_NONCE16), mode=None).encryptor()
    raw = enc.update(bytes(4 * length))
    return np.frombuffer(raw, dtype="<u4")


# -- AEAD for shares ----------------------------------------------------------------------------


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """ChaCha20-Poly1305 with a fixed nonce: ``key`` must encrypt this one message only."""
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE12, plaintext, associated)


def open_sealed(key: bytes, ciphertext: bytes, associated: bytes) -> bytes | None:
    """The plaintext, or None when the ciphertext or its associated data was altered."""
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE12, ciphertext, associated)
    except InvalidTag:
        return None


# -- Ed25519 -----------------------------------------------------------------------------------


def ed25519_public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(_RAW, serialization.PublicFormat.Raw)


def ed25519_public(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def sign_b64(key: Ed25519PrivateKey, message: bytes) -> str:
    return b64(key.sign(message))


def verify_b64(key: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    """True only for a valid base64 64-byte signature of ``message``; never raises."""
    try:
        sig = unb64(signature, SIGNATURE_BYTES)
        key.verify(sig, message)
    except (ValueError, InvalidSignature):
        return False
    return True
