"""Masks, sealed shares and commitments: the derivations the node and the aggregator share.

Every key comes from HKDF-SHA256 with an ``info`` naming its use, the round, the group and the
node ids (:func:`vfer.secagg.primitives.context`), so a key is never used for two purposes:

* pairwise mask of u and v: HKDF(X25519(mask keys), "pairwise-mask", round, group, min(u, v),
  max(u, v)), expanded by ChaCha20; the smaller id adds it, the larger subtracts it, so the
  pair's masks cancel in the sum;
* self mask of u: HKDF(seed_u, "self-mask", round, group, u), expanded by ChaCha20;
* sealed shares u -> v: ChaCha20-Poly1305 keyed by HKDF(X25519(share keys), "share", round,
  group, u, v) (directed: each key seals one message), associated data naming the same;
* commitments: SHA-256 of the use, round, group, ids and the secret (32-byte seed, 66-byte
  share: both high-entropy, so a commitment reveals nothing a search could find).
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from vfer.secagg import primitives as p
from vfer.secagg.shamir import SHARE_BYTES
from vfer.secagg.wire import EncryptedShare


def pairwise_mask(
    own: X25519PrivateKey, peer_key: bytes, round_id: int, group_id: int, a: str, b: str, n: int
) -> np.ndarray:
    """The n uint32 mask a and b share (order of a, b does not matter)."""
    lo, hi = sorted((a, b))
    key = p.hkdf(p.agree(own, peer_key), p.context("pairwise-mask", round_id, group_id, lo, hi))
    return p.mask_stream(key, n)


def add_pairwise(acc: np.ndarray, mask: np.ndarray, own: str, peer: str) -> None:
    """What ``own`` does with the pair's mask: the smaller id adds, the larger subtracts."""
    if own < peer:
        np.add(acc, mask, out=acc)
    else:
        np.subtract(acc, mask, out=acc)


def self_mask(seed: bytes, round_id: int, group_id: int, node: str, n: int) -> np.ndarray:
    key = p.hkdf(seed, p.context("self-mask", round_id, group_id, node))
    return p.mask_stream(key, n)


def seed_commitment(round_id: int, group_id: int, node: str, seed: bytes) -> str:
    return p.digest("seed", round_id, group_id, node, seed)


def share_commitment(
    what: str, round_id: int, group_id: int, sender: str, holder: str, share: bytes
) -> str:
    """``what``: "seed-share" or "key-share"; ``sender`` made the share, ``holder`` holds it."""
    return p.digest(what, round_id, group_id, sender, holder, share)


def _share_key(
    own: X25519PrivateKey, peer_key: bytes, round_id: int, group_id: int, sender: str, to: str
) -> tuple[bytes, bytes]:
    info = p.context("share", round_id, group_id, sender, to)
    return p.hkdf(p.agree(own, peer_key), info), p.context(
        "share-ad", round_id, group_id, sender, to
    )


def seal_shares(
    own: X25519PrivateKey,
    peer_key: bytes,
    ids: tuple[int, int, str, str],
    seed_share: bytes,
    key_share: bytes,
) -> EncryptedShare:
    """``ids``: (round, group, sender, receiver). Both shares sealed to the receiver."""
    round_id, group_id, sender, to = ids
    key, ad = _share_key(own, peer_key, round_id, group_id, sender, to)
    return EncryptedShare(
        ciphertext=p.b64(p.seal(key, seed_share + key_share, ad)),
        seed_share_commitment=share_commitment("seed-share", *ids, seed_share),
        key_share_commitment=share_commitment("key-share", *ids, key_share),
    )


def open_shares(
    own: X25519PrivateKey, peer_key: bytes, ids: tuple[int, int, str, str], sealed: EncryptedShare
) -> tuple[bytes, bytes] | None:
    """(seed share, key share) sealed by ``ids``' sender to us, or None when it does not
    open (altered, or sealed with other keys)."""
    round_id, group_id, sender, to = ids
    key, ad = _share_key(own, peer_key, round_id, group_id, sender, to)
    try:
        plain = p.open_sealed(key, p.unb64(sealed.ciphertext), ad)
    except ValueError:
        return None
    if plain is None or len(plain) != 2 * SHARE_BYTES:
        return None
    return plain[:SHARE_BYTES], plain[SHARE_BYTES:]
