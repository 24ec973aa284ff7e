"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1), with Python ints.

A secret is split into ``n`` shares at x = 1..n (a member's 1-based index in its group), any
``t`` of which give it back; fewer than ``t`` are uniformly random and say nothing about it.
2^521 - 1 (a Mersenne prime) is larger than any 256-bit secret, so a secret is the field
element itself. A share travels as :data:`SHARE_BYTES` big-endian bytes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

PRIME = 2**521 - 1
SHARE_BYTES = 66
SECRET_BYTES = 32


class ShamirError(ValueError):
    """Shares that cannot give a secret back (too few, duplicate or out-of-range x, bad bytes)."""


def split(secret: bytes, n: int, t: int) -> dict[int, int]:
    """``n`` shares {x: y} of ``secret`` (32 bytes), any ``t`` of which reconstruct it."""
    if len(secret) != SECRET_BYTES:
        raise ShamirError(f"secret of {len(secret)} bytes, expected {SECRET_BYTES}")
    if not 1 <= t <= n:
        raise ShamirError(f"threshold {t} must be in [1, {n}]")
    coefs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(t - 1)]
    return {x: _evaluate(coefs, x) for x in range(1, n + 1)}


def _evaluate(coefs: list[int], x: int) -> int:
    y = 0
    for c in reversed(coefs):  # Horner
        y = (y * x + c) % PRIME
    return y


def reconstruct(shares: Mapping[int, int], t: int) -> bytes:
    """The secret from at least ``t`` shares {x: y} (the first ``t`` by x are used)."""
    if len(shares) < t:
        raise ShamirError(f"{len(shares)} shares, the threshold is {t}")
    points = sorted(shares.items())[:t]
    if any(not 1 <= x < PRIME or not 0 <= y < PRIME for x, y in points):
        raise ShamirError("a share is outside the field")
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * SECRET_BYTES):
        raise ShamirError("the shares do not lie on one polynomial of a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")


def share_bytes(y: int) -> bytes:
    return y.to_bytes(SHARE_BYTES, "big")


def share_value(raw: bytes) -> int:
    """A share's value from its bytes; ShamirError unless exactly 66 bytes below the prime."""
    if len(raw) != SHARE_BYTES:
        raise ShamirError(f"share of {len(raw)} bytes, expected {SHARE_BYTES}")
    y = int.from_bytes(raw, "big")
    if y >= PRIME:
        raise ShamirError("share value outside the field")
    return y
