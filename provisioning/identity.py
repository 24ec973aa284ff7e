"""Node identities for secure aggregation: the fleet's vouching key, each node's identity key
and voucher (``add-node``), the signed revocation list (``revoke-node``).

The vouching key lives in ``FLEET/vouching/`` on the provisioning machine only; nodes and the
aggregator get its public half (``vouching_public_key.pem``) and the aggregator a copy of
``revocations.json``. docs/secure-aggregation.md says why it is not the fleet signing key.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioning import pki
from vfer import secagg, signing
from vfer.envelope import to_json

VOUCHING_KEY = "vouching/vouching_key.pem"
VOUCHING_PUBLIC = "vouching_public_key.pem"
REVOCATIONS = "revocations.json"
IDENTITY_KEY = "identity_key.pem"
IDENTITY_VOUCHER = "identity_voucher.json"


def vouching_key(fleet: Path) -> Ed25519PrivateKey:
    """The fleet's vouching key (made on first use; a fleet from before it gets one then).

    It stays in FLEET/vouching/, apart from the aggregator's signing key, so an aggregator
    host cannot mint identities (docs/secure-aggregation.md, "The vouching key")."""
    path = fleet / VOUCHING_KEY
    if not path.exists():
        private, public = signing.new_signing_key()
        pki.write_private(path, private)
        pki.write_public(fleet / VOUCHING_PUBLIC, public)
        pki.write_public(fleet / "aggregator" / VOUCHING_PUBLIC, public)
    return signing.load_private_key(path)


def give_identity(fleet: Path, folder: Path, name: str) -> str:
    """A new identity key and its voucher in the node's folder; returns its fingerprint."""
    vouching = vouching_key(fleet)
    key = secagg.make_identity()
    secagg.save_identity(folder / IDENTITY_KEY, key)
    secagg.save_voucher(folder / IDENTITY_VOUCHER, secagg.vouch(vouching, name, key.public_key()))
    pki.write_public(folder / VOUCHING_PUBLIC, (fleet / VOUCHING_PUBLIC).read_bytes())
    return secagg.fingerprint(key)


def revoke_identity(fleet: Path, folder: Path) -> None:
    """Add the node's identity to the signed revocation list (and the aggregator's copy)."""
    voucher_path = folder / IDENTITY_VOUCHER
    if not voucher_path.exists():
        return  # a node added before identity keys existed has none to revoke
    vouching = vouching_key(fleet)
    path = fleet / "vouching" / REVOCATIONS
    previous = (
        secagg.open_revocations(path.read_bytes(), vouching.public_key()) if path.exists() else None
    )
    revocations = secagg.revoke(vouching, previous, secagg.load_voucher(voucher_path))
    payload = to_json(revocations)
    pki.write_public(path, payload)
    pki.write_public(fleet / "aggregator" / REVOCATIONS, payload)
