"""Head weights as safetensors: a named set of numpy arrays that cannot run code when loaded.

Used for the bundle's ``vfer_head.safetensors`` / ``ifer_head.safetensors`` and as the payload
inside the federation envelope. Never pickle.
"""

from __future__ import annotations

import json
import math
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
    """Weights that do not match what was expected; ``reason`` is a stable short code."""

    def __init__(self, message: str, reason: str = "bad_body") -> None:
        super().__init__(message)
        self.reason = reason


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
    problem = bounds_problem(weights, np.inf if max_abs is None else max_abs)
    if problem is not None:
        raise WeightsError(problem[1], problem[0])


def bounds_problem(weights: Mapping[str, np.ndarray], max_abs: float) -> tuple[str, str] | None:
    """``("non_finite" | "huge_values", detail)`` for the first array with NaN/Inf or a value
    beyond ``max_abs``, else None. One pass per array, no copy of float32 input."""
    for name, arr in weights.items():
        if not arr.size:
            continue
        a = np.asarray(arr)
        biggest = float(np.max(np.abs(a)))  # NaN or Inf anywhere makes this non-finite
        if not np.isfinite(biggest):
            return "non_finite", f"{name} contains NaN or Inf"
        if biggest > max_abs:
            return "huge_values", f"{name} has |value| {biggest:.3g} > {max_abs}"
    return None


def distance(weights: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray]) -> float:
    """L2 distance between ``weights`` and ``base`` over all arrays (a missing base counts as 0)."""
    sq = 0.0
    for name, arr in weights.items():
        a = np.asarray(arr, dtype=np.float32).ravel()
        b = base.get(name)
        d = a - np.asarray(b, dtype=np.float32).ravel() if b is not None else a
        sq += float(np.dot(d, d))
    return float(np.sqrt(sq))


#: safetensors dtype codes -> numpy dtype names (anything else is refused as wrong_dtype).
_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
MAX_ST_HEADER = 1 << 20

Layout = dict[str, tuple[str, tuple[int, ...], int, int]]


def layout(body: bytes) -> Layout:
    """name -> (dtype, shape, absolute begin, absolute end) from a safetensors header.

    Checked as strictly as the safetensors library does (sizes, offsets that tile the data
    exactly), so nothing is ever read outside the buffer. Raises :class:`WeightsError`
    with reason ``bad_body``.
    """
    if len(body) < 8:
        raise WeightsError(f"{len(body)} bytes cannot hold a safetensors header")
    n = int.from_bytes(body[:8], "little")
    if n > MAX_ST_HEADER or 8 + n > len(body):
        raise WeightsError(f"safetensors header of {n} bytes does not fit")
    try:
        header = json.loads(body[8 : 8 + n])
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WeightsError(f"safetensors header is not JSON: {str(exc)[:100]}") from None
    if not isinstance(header, dict):
        raise WeightsError("safetensors header is not an object")
    header.pop("__metadata__", None)
    base, size = 8 + n, len(body) - 8 - n
    out: Layout = {}
    spans = []
    for name, info in header.items():
        try:
            code, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            ok = all(isinstance(v, int) and v >= 0 for v in (*shape, begin, end))
        except (TypeError, KeyError, ValueError) as exc:
            raise WeightsError(f"{name}: malformed tensor entry") from exc
        if not ok or not isinstance(code, str) or begin > end:
            raise WeightsError(f"{name}: malformed tensor entry")
        dtype = _ST_DTYPES.get(code, code)
        itemsize = np.dtype(dtype).itemsize if code in _ST_DTYPES else 0
        if itemsize and math.prod(shape) * itemsize != end - begin:
            raise WeightsError(f"{name}: {end - begin} bytes for shape {shape}")
        out[name] = (dtype, shape, base + begin, base + end)
        spans.append((begin, end))
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            raise WeightsError("tensor data does not tile the buffer")
        pos = end
    if pos != size:
        raise WeightsError(f"tensor data covers {pos} of {size} bytes")
    return out


def view(
    body: bytes,
    spec: Mapping[str, WeightSpec] | None = None,
    *,
    dtypes: tuple[str, ...] | None = None,
) -> Weights:
    """The arrays of a safetensors body as read-only views into it: no copy.

    With ``spec``: exactly its trainable names (``missing_weights``, ``unexpected_weights``),
    its shapes (``wrong_shape``) and one of ``dtypes`` (``wrong_dtype``).
    """
    lay = layout(body)
    if spec is not None:
        expected = {n: s for n, s in spec.items() if s.trainable}
        missing = sorted(set(expected) - set(lay))
        extra = sorted(set(lay) - set(expected))
        if missing:
            raise WeightsError(f"missing {missing[:5]}", "missing_weights")
        if extra:
            raise WeightsError(f"unexpected {extra[:5]}", "unexpected_weights")
    out: Weights = {}
    for name, (dtype, shape, begin, end) in lay.items():
        if spec is not None and shape != spec[name].shape:
            raise WeightsError(f"{name}: {shape}, expected {spec[name].shape}", "wrong_shape")
        if dtype not in _ST_DTYPES.values() or (dtypes is not None and dtype not in dtypes):
            raise WeightsError(f"{name}: {dtype} not in {list(dtypes or ())}", "wrong_dtype")
        count = (end - begin) // np.dtype(dtype).itemsize
        out[name] = np.frombuffer(body, dtype=dtype, count=count, offset=begin).reshape(shape)
    return out
