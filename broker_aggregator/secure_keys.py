"""The keys a secure round needs on the leader: the fleet key that signs its stage messages,
the vouching key's public half that checks node identities, and the revocation list."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker_aggregator.secure_config import SecureAggregationConfig
from vfer.config_io import ConfigError
from vfer.envelope import MessageError
from vfer.secagg import open_revocations
from vfer.signing import load_public_key

log = logging.getLogger(__name__)


@dataclass
class Keys:
    """The keys a secure round needs: the fleet key that signs, the key that vouches, and the
    revocation list (checked at start: an unreadable one is a config error)."""

    fleet: Ed25519PrivateKey | None
    vouching: Ed25519PublicKey
    revocations_file: Path | None = None
    _revoked: frozenset[str] = frozenset()

    @classmethod
    def load(cls, cfg: SecureAggregationConfig, fleet: Ed25519PrivateKey | None) -> Keys:
        keys = cls(fleet, load_public_key(cfg.vouching_public_key), cfg.revocations_file)
        try:
            keys._revoked = keys._read()
        except (OSError, MessageError) as exc:
            raise ConfigError(
                f"secure_aggregation.revocations_file {cfg.revocations_file}: {exc}"
            ) from None
        return keys

    def _read(self) -> frozenset[str]:
        if self.revocations_file is None:
            return frozenset()
        payload = Path(self.revocations_file).read_bytes()
        return frozenset(open_revocations(payload, self.vouching).fingerprints)

    def revoked(self) -> frozenset[str]:
        """Fingerprints of revoked identity keys, read again at each round's open (a list that
        became unreadable keeps the last good one, logged: revocations never get lost)."""
        try:
            self._revoked = self._read() | self._revoked
        except (OSError, MessageError) as exc:
            log.error(
                "revocations_file %s unreadable (%s); keeping the last list",
                self.revocations_file,
                exc,
            )
        return self._revoked
