"""What the federation client hands its caller: the update it sends, the central it verified."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vfer import signing


@dataclass(frozen=True)
class NodeUpdate:
    """What a node sends after personalizing: v's trainable weights and how it got them."""

    round_id: int
    base_version: int
    weights: Mapping[str, np.ndarray]
    clips_per_class: Mapping[str, int]
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CentralModel:
    """A verified central v: trainable weights by name (float32)."""

    version: int
    round_id: int
    classes: tuple[str, ...]
    weights: dict[str, np.ndarray]
    sha256: str


def fleet_key(src: Ed25519PublicKey | str | os.PathLike[str] | None) -> Ed25519PublicKey | None:
    if src is None or isinstance(src, Ed25519PublicKey):
        return src
    return signing.load_public_key(src)
