"""The heads g (IFER) and v (VFER) as Keras 3 models, exactly as the paper (Sec. 3.1, 3.2, 5.5).

* g: 1280, BatchNorm, Dense(512, relu), BatchNorm, Dropout, Dense(K, softmax):
  662,534 trainable parameters with K = 6.
* v: per frame 1280, BatchNorm, Dense(128), BatchNorm, Dense(64), BatchNorm, LSTM(64, last step),
  Dense(K, softmax): 208,582 trainable and 2,944 non-trainable with K = 6.

Clips are zero pre-padded to a common length; a Masking layer makes the padding invisible, so the
LSTM state is still zero when the first real frame arrives. That is what lets the streaming step
model (:mod:`vfer.export`) reproduce v frame by frame.

Variables are named ``<layer>.<variable>`` exactly as in :mod:`vfer.heads_spec`. TensorFlow is
imported lazily: importing this module is cheap, building a model is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vfer.heads_spec import EMBEDDING_DIM, G_HIDDEN, V_FC, V_LSTM, ifer_spec, vfer_spec

G_DROPOUT = 0.5


def _keras() -> Any:
    import keras

    return keras


def build_ifer(num_classes: int, dropout: float = G_DROPOUT) -> Any:
    """g as an uncompiled Keras model: (batch, 1280) -> (batch, K) probabilities."""
    ifer_spec(num_classes)  # validates K
    keras = _keras()
    layers = keras.layers
    x_in = keras.Input((EMBEDDING_DIM,), name="embedding")
    x = layers.BatchNormalization(name="g_bn0")(x_in)
    x = layers.Dense(G_HIDDEN, activation="relu", name="g_fc512")(x)
    x = layers.BatchNormalization(name="g_bn1")(x)
    x = layers.Dropout(dropout, name="g_dropout")(x)
    out = layers.Dense(num_classes, activation="softmax", name="g_out")(x)
    return keras.Model(x_in, out, name="ifer_head_g")


def build_vfer(num_classes: int) -> Any:
    """v as an uncompiled Keras model: (batch, T, 1280) zero pre-padded -> (batch, K)."""
    vfer_spec(num_classes)
    keras = _keras()
    layers = keras.layers
    fc1, fc2 = V_FC
    x_in = keras.Input((None, EMBEDDING_DIM), name="frames")
    x = layers.Masking(mask_value=0.0, name="v_mask")(x_in)
    x = layers.BatchNormalization(name="v_bn0")(x)
    x = layers.Dense(fc1, activation="relu", name="v_fc128")(x)
    x = layers.BatchNormalization(name="v_bn1")(x)
    x = layers.Dense(fc2, activation="relu", name="v_fc64")(x)
    x = layers.BatchNormalization(name="v_bn2")(x)
    x = layers.LSTM(V_LSTM, name="v_lstm")(x)
    out = layers.Dense(num_classes, activation="softmax", name="v_out")(x)
    return keras.Model(x_in, out, name="vfer_head_v")


def _named_variables(model: Any) -> dict[str, Any]:
    named = {}
    for layer in model.layers:
        for var in layer.weights:
            short = var.path.rsplit("/", 1)[-1]
            named[f"{layer.name}.{short}"] = var
    return named


def get_weights(model: Any) -> dict[str, np.ndarray]:
    """All variables of g or v as ``{"<layer>.<variable>": float32 array}``."""
    return {
        name: np.asarray(var.numpy(), dtype=np.float32)
        for name, var in _named_variables(model).items()
    }


def set_weights(model: Any, weights: Mapping[str, np.ndarray], *, partial: bool = False) -> None:
    """Assign named weights; every variable must be given unless ``partial``."""
    named = _named_variables(model)
    unknown = sorted(set(weights) - set(named))
    if unknown:
        raise ValueError(f"{model.name}: unknown weight names {unknown[:5]}")
    missing = sorted(set(named) - set(weights))
    if missing and not partial:
        raise ValueError(f"{model.name}: missing weights {missing[:5]}")
    for name, value in weights.items():
        var = named[name]
        if tuple(var.shape) != tuple(value.shape):
            raise ValueError(
                f"{name}: shape {tuple(value.shape)}, the model has {tuple(var.shape)}"
            )
        var.assign(np.asarray(value, dtype=np.float32))


def num_classes_of(weights: Mapping[str, np.ndarray], prefix: str) -> int:
    """K from a weight dict of g (``prefix="g"``) or v (``"v"``)."""
    bias = weights.get(f"{prefix}_out.bias")
    if bias is None:
        raise ValueError(f"no {prefix}_out.bias in these weights: not a {prefix} head")
    return int(bias.shape[0])


def param_counts(model: Any) -> dict[str, int]:
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    fixed = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"trainable": trainable, "non_trainable": fixed, "total": trainable + fixed}
