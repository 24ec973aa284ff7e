"""Ed25519 signatures for the central v and the round message (``cryptography``), and the key
files the fleet uses. One fleet key signs both; nodes verify both against the public key.

Formats, exactly: the aggregator's private key is an unencrypted PKCS8 PEM
(``FLEET/aggregator/signing_key.pem``); every node holds the SubjectPublicKeyInfo PEM
(``FLEET/fleet_public_key.pem``). :func:`new_signing_key` makes a pair (the one place a fleet
key is generated: provisioning's ``init-fleet`` and :func:`generate_keypair`, which writes both
into a folder for the lab's simulations, tests and demos).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vfer.atomic import atomic_write_bytes

PRIVATE_KEY_NAME = "signing_key.pem"
PUBLIC_KEY_NAME = "fleet_public_key.pem"
SIGNATURE_BYTES = 64


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or not the expected Ed25519 PEM."""


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an unencrypted PKCS8 PEM Ed25519 private key."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PKCS8 PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 key, got {type(key).__name__}")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load a SubjectPublicKeyInfo PEM Ed25519 public key."""
    data = _read(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a SubjectPublicKeyInfo PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: expected an Ed25519 key, got {type(key).__name__}")
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def new_signing_key() -> tuple[bytes, bytes]:
    """A new fleet key: (unencrypted PKCS8 private PEM, SubjectPublicKeyInfo public PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return private, public_pem(key.public_key())


def generate_keypair(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new ``signing_key.pem`` (mode 0600) and ``fleet_public_key.pem`` into ``directory``."""
    folder = Path(directory)
    private, public = new_signing_key()
    priv_path, pub_path = folder / PRIVATE_KEY_NAME, folder / PUBLIC_KEY_NAME
    atomic_write_bytes(priv_path, private)
    os.chmod(priv_path, 0o600)
    atomic_write_bytes(pub_path, public)
    return priv_path, pub_path


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    return key.sign(message)


def verify(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """True only for a valid 64-byte signature of ``message``; never raises on bad input."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
