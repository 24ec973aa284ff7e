"""Ed25519 key files in the fleet's formats, sign and verify."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfer import signing


def test_keypair_files_round_trip(tmp_path: Path) -> None:
    priv_path, pub_path = signing.generate_keypair(tmp_path)
    assert priv_path.name == "signing_key.pem" and pub_path.name == "fleet_public_key.pem"
    assert b"BEGIN PRIVATE KEY" in priv_path.read_bytes()
    assert b"BEGIN PUBLIC KEY" in pub_path.read_bytes()
    assert priv_path.stat().st_mode & 0o077 == 0
    key, pub = signing.load_private_key(priv_path), signing.load_public_key(pub_path)
    sig = signing.sign(key, b"central v7")
    assert signing.verify(pub, sig, b"central v7")
    assert not signing.verify(pub, sig, b"central v8")
    assert not signing.verify(pub, sig[:10], b"central v7")
    other = signing.load_public_key(signing.generate_keypair(tmp_path / "other")[1])
    assert not signing.verify(other, sig, b"central v7")


def test_bad_key_files(tmp_path: Path) -> None:
    with pytest.raises(signing.KeyFileError, match="cannot read"):
        signing.load_private_key(tmp_path / "absent.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(signing.KeyFileError):
        signing.load_public_key(junk)
    priv, _ = signing.generate_keypair(tmp_path)
    with pytest.raises(signing.KeyFileError):
        signing.load_public_key(priv)  # a private key where the public one belongs
