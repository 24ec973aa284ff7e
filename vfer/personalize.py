"""Fine-tuning v on pseudo-labelled clips (the paper's Sec. 3.3), shared by the node and the lab.

Only v is trained, from the central v, on the cached per-frame embeddings of the selected clips
(the backbone never runs again): plain cross-entropy, Adam, a few epochs. BatchNorm keeps the
central statistics (the model runs in inference mode while its weights train), so every node's v
differs from the central one only in the trainable weights that federation averages.

One option beside the paper's plain cross-entropy: ``l2sp``, an L2 pull towards the starting
(central) weights during fine-tuning (L2-SP, Li et al., ICML 2018): the loss becomes
``CE + l2sp / 2 * sum((w - w_central) ** 2)`` over v's trainable weights, so a few noisy pseudo
labels move v less far from what the whole corpus taught it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vfer import personalization_defaults as defaults
from vfer.heads import build_vfer, get_weights, num_classes_of, set_weights
from vfer.heads_spec import EMBEDDING_DIM


@dataclass(frozen=True)
class FineTuneResult:
    weights: dict[str, np.ndarray]  # all of v's weights after fine-tuning
    loss_before: float  # mean cross-entropy of the starting v on the pseudo labels
    loss_after: float
    steps: int
    train_s: float = 0.0  # wall seconds of the epochs (graph tracing included), not of set-up


def pad_clips(clips: Sequence[np.ndarray], max_len: int | None = None) -> np.ndarray:
    """Zero pre-pad (T_i, 1280) clips to (N, T, 1280); longer clips keep their last ``max_len`` frames."""
    if not clips:
        raise ValueError("no clips to pad")
    longest = max(len(c) for c in clips)
    t = min(longest, max_len) if max_len else longest
    out = np.zeros((len(clips), t, EMBEDDING_DIM), dtype=np.float32)
    for i, clip in enumerate(clips):
        arr = np.asarray(clip, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != EMBEDDING_DIM or len(arr) == 0:
            raise ValueError(f"clip {i}: expected (frames, 1280) embeddings, got shape {arr.shape}")
        arr = arr[-t:]
        out[i, t - len(arr) :] = arr
    return out


def finetune_v(
    start: Mapping[str, np.ndarray],
    clips: Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    *,
    epochs: int = defaults.EPOCHS,
    lr: float = defaults.LR,
    batch_size: int = defaults.BATCH_SIZE,
    seed: int = 0,
    l2sp: float = 0.0,
) -> FineTuneResult:
    """Fine-tune v from ``start`` on ``clips`` with ``labels``; returns the new weights and losses.

    The losses reported are the plain cross-entropy on the pseudo labels, with or without ``l2sp``.
    """
    import keras

    k = num_classes_of(start, "v")
    y = _checked_labels(clips, labels, k, l2sp)
    x = pad_clips(clips)
    keras.utils.set_random_seed(seed)
    model = build_vfer(k)
    set_weights(model, start)
    mean_loss, train_step = _steps(model, lr, l2sp)
    before = float(mean_loss(x, y))
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    steps = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            train_step(x[idx], y[idx])
            steps += 1
    train_s = time.perf_counter() - t0
    after = float(mean_loss(x, y))
    return FineTuneResult(get_weights(model), before, after, steps, train_s)


def _checked_labels(
    clips: Sequence[np.ndarray], labels: Sequence[int] | np.ndarray, k: int, l2sp: float
) -> np.ndarray:
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(clips):
        raise ValueError(f"{len(clips)} clips but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must be in 0..{k - 1}")
    if not (np.isfinite(l2sp) and 0.0 <= l2sp <= 100.0):
        raise ValueError(f"l2sp must be in [0, 100], got {l2sp}")
    return y


def _steps(model: Any, lr: float, l2sp: float) -> tuple[Any, Any]:
    """The mean loss and one Adam step (cross-entropy, plus the L2-SP pull when ``l2sp`` > 0),
    each traced once for any batch size and clip length (eager LSTM steps are ~10x slower)."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(learning_rate=lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    variables = model.trainable_variables
    anchors = [tf.constant(v.numpy()) for v in variables]
    pull = tf.constant(l2sp / 2.0, tf.float32)
    signature = [
        tf.TensorSpec([None, None, EMBEDDING_DIM], tf.float32),
        tf.TensorSpec([None], tf.int64),
    ]

    @tf.function(input_signature=signature)
    def mean_loss(xb: Any, yb: Any) -> Any:
        return loss_fn(yb, model(xb, training=False))

    @tf.function(input_signature=signature)
    def train_step(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=False))
            if l2sp > 0:
                drift = tf.add_n(
                    [
                        tf.reduce_sum(tf.square(v - a))
                        for v, a in zip(variables, anchors, strict=True)
                    ]
                )
                loss = loss + pull * drift
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    return mean_loss, lambda xb, yb: train_step(tf.constant(xb), tf.constant(yb))


def predict_v(
    weights: Mapping[str, np.ndarray], clips: Sequence[np.ndarray], batch_size: int = 32
) -> np.ndarray:
    """v's clip probabilities (N, K) for whole clips (zero pre-padded, as in training)."""
    k = num_classes_of(weights, "v")
    if not clips:
        return np.zeros((0, k), np.float32)
    model = build_vfer(k)
    set_weights(model, weights)
    out = [
        np.asarray(model(pad_clips(clips[i : i + batch_size]), training=False))
        for i in range(0, len(clips), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)
