"""Updates into Z_2^32 and group sums back, with a documented scale and error bound.

A node's update x (its move from the base central, flat float) is clipped to L2 norm
``clip_norm`` and then to ``c = min(clip_value, clip_norm)`` per coordinate, multiplied by
``f = w / max_weight`` (w: 1 under ``mean``, the clip count capped at ``max_weight`` under
``samples``), scaled by

    S = (2^31 - 1 - n_max) / (n_max x c)        n_max = 2 x min_group_size - 1

and rounded stochastically (floor(f x S + u), u uniform in [0, 1): unbiased). Each value is
then at most c x S + 1 in size, so the sum over a group of at most n_max nodes stays within
[-(2^31 - 1), 2^31 - 1] and, read back as a signed 32-bit integer, never wraps. The weight w
travels as one extra coordinate of the same vector (an exact integer), so the aggregator
learns only each group's total weight, never one node's clip count.

**Error bound** (per weight, on the decoded group mean against the float mean of the clipped
updates): each rounding errs by less than 1/S, so the weighted mean errs by less than
n x max_weight / (S x sum(w)), which is 1/S under ``mean`` (:func:`error_bound`). With the
defaults (c = 10, n_max = 15) that is 7.0e-8.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vfer.heads_spec import WeightSpec, trainable_names
from vfer.secagg.params import SecAggParams

MODULUS_BITS = 32


def scale(params: SecAggParams) -> float:
    """S: quantization steps per unit (module docstring)."""
    n_max = params.max_group_size
    return (2**31 - 1 - n_max) / (n_max * params.coordinate_bound)


def clip(update: np.ndarray, params: SecAggParams) -> np.ndarray:
    """The update (float64) clipped to L2 ``clip_norm`` then to ``coordinate_bound``."""
    x = np.asarray(update, dtype=np.float64).reshape(-1)
    if x.size != params.vector_length:
        raise ValueError(f"update of {x.size} values, the round expects {params.vector_length}")
    if not np.all(np.isfinite(x)):
        raise ValueError("update has NaN or infinite values")
    norm = float(np.linalg.norm(x))
    if norm > params.clip_norm:
        x = x * (params.clip_norm / norm)
    c = params.coordinate_bound
    return np.clip(x, -c, c)


def node_weight(clips: int, params: SecAggParams) -> int:
    """w: 1 under ``mean``; the clip count capped at ``max_weight`` under ``samples``."""
    if params.weighting == "mean":
        return 1
    if clips < 1:
        raise ValueError("sample weighting needs at least one clip")
    return min(int(clips), params.max_weight)


def encode(
    update: np.ndarray, weight: int, params: SecAggParams, rng: np.random.Generator
) -> np.ndarray:
    """The node's plaintext in Z_2^32: ``masked_length`` uint32 (the vector, then w)."""
    top = params.max_weight if params.weighting == "samples" else 1
    if not 1 <= weight <= top:
        raise ValueError(f"weight {weight} outside [1, {top}] ({params.weighting} weighting)")
    f = weight / params.max_weight if params.weighting == "samples" else 1.0
    scaled = clip(update, params) * (f * scale(params))
    q = np.floor(scaled + rng.random(scaled.size)).astype(np.int64)
    out = np.empty(params.masked_length, dtype=np.uint32)
    out[:-1] = (q & 0xFFFFFFFF).astype(np.uint32)
    out[-1] = weight
    return out


def decode_sum(total: np.ndarray, params: SecAggParams) -> tuple[np.ndarray, int]:
    """The unmasked group sum back as (sum of f x clipped update, float64; total weight)."""
    if total.dtype != np.uint32 or total.shape != (params.masked_length,):
        raise ValueError(f"expected {params.masked_length} uint32, got {total.dtype} {total.shape}")
    signed = total[:-1].view(np.int32).astype(np.float64) / scale(params)
    return signed, int(total[-1])


def group_mean(total: np.ndarray, params: SecAggParams) -> tuple[np.ndarray, int]:
    """The group's weighted mean update (float64) and its total weight from the unmasked sum."""
    summed, weight = decode_sum(total, params)
    if weight < 1:
        raise ValueError("the group's total weight is 0")
    if params.weighting == "samples":
        return summed * (params.max_weight / weight), weight
    return summed / weight, weight


def error_bound(params: SecAggParams, n: int, total_weight: int) -> float:
    """Largest |decoded group mean - float mean of the clipped updates| per weight."""
    if params.weighting == "samples":
        return n * params.max_weight / (scale(params) * total_weight)
    return 1.0 / scale(params)


def flatten(weights: Mapping[str, np.ndarray], spec: Mapping[str, WeightSpec]) -> np.ndarray:
    """The trainable arrays of ``weights`` as one float64 vector, in ``spec``'s order."""
    names = trainable_names(dict(spec))
    missing = sorted(set(names) - set(weights))[:5]
    if missing:
        raise ValueError(f"weights lack {missing}")
    for name in names:
        if tuple(np.shape(weights[name])) != spec[name].shape:
            raise ValueError(
                f"{name}: shape {np.shape(weights[name])}, expected {spec[name].shape}"
            )
    return np.concatenate([np.asarray(weights[n], dtype=np.float64).reshape(-1) for n in names])


def unflatten(vector: np.ndarray, spec: Mapping[str, WeightSpec]) -> dict[str, np.ndarray]:
    """:func:`flatten` undone: named arrays (views into ``vector``) of the spec's shapes."""
    names = trainable_names(dict(spec))
    total = sum(spec[n].size for n in names)
    if vector.shape != (total,):
        raise ValueError(f"vector of shape {vector.shape}, the spec needs ({total},)")
    out, at = {}, 0
    for name in names:
        size = spec[name].size
        out[name] = vector[at : at + size].reshape(spec[name].shape)
        at += size
    return out
