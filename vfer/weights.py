"""Head weights as safetensors: a named set of numpy arrays that cannot run code when loaded.

Used for the bundle's ``vfer_head.safetensors`` / ``ifer_head.safetensors`` and as the payload
inside the federation envelope. Never pickle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from vfer.atomic import atomic_write_bytes
from vfer.heads_spec import WeightSpec

Weights = dict[str, np.ndarray]


class WeightsError(ValueError):
    """Weights that do not match what was expected (names, shapes, dtypes, values)."""


def to_bytes(weights: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    arrays = {name: np.ascontiguousarray(a) for name, a in weights.items()}
    return _st_save(arrays, metadata=metadata)


def from_bytes(data: bytes) -> Weights:
    try:
        return dict(_st_load(data))
    except (SafetensorError, ValueError, OverflowError) as exc:
        raise WeightsError(f"not a valid safetensors payload: {exc}") from exc


def save(path: str | os.PathLike[str], weights: Mapping[str, np.ndarray]) -> None:
    atomic_write_bytes(path, to_bytes(weights))


def load(path: str | os.PathLike[str]) -> Weights:
    with open(path, "rb") as fh:
        return from_bytes(fh.read())


def check(
    weights: Mapping[str, np.ndarray],
    spec: Mapping[str, WeightSpec],
    *,
    trainable_only: bool = False,
    dtypes: tuple[str, ...] = ("float32",),
    max_abs: float | None = None,
) -> None:
    """Raise :class:`WeightsError` unless ``weights`` has exactly the spec's names, shapes, dtypes."""
    expected = {n: s for n, s in spec.items() if s.trainable or not trainable_only}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise WeightsError(f"weight names differ: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, ws in expected.items():
        arr = weights[name]
        if tuple(arr.shape) != ws.shape:
            raise WeightsError(f"{name}: shape {tuple(arr.shape)}, expected {ws.shape}")
        if arr.dtype.name not in dtypes:
            raise WeightsError(f"{name}: dtype {arr.dtype.name}, expected one of {list(dtypes)}")
        if not np.all(np.isfinite(arr)):
            raise WeightsError(f"{name}: contains NaN or Inf")
        if max_abs is not None and arr.size and float(np.max(np.abs(arr))) > max_abs:
            raise WeightsError(f"{name}: a value exceeds |{max_abs}|")
