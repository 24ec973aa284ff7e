"""The exact weight layout of the heads g and v, as plain data (no TensorFlow).

Every role that handles head weights without training them (the aggregator validating an
update, the codec, the bundle loader) checks names and shapes against this one table, and the
Keras builders in :mod:`vfer.heads` name their variables from it.
"""

from __future__ import annotations

from dataclasses import dataclass

EMBEDDING_DIM = 1280
G_HIDDEN = 512
V_FC = (128, 64)
V_LSTM = 64


@dataclass(frozen=True)
class WeightSpec:
    shape: tuple[int, ...]
    trainable: bool

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _batchnorm(name: str, dim: int) -> dict[str, WeightSpec]:
    return {
        f"{name}.gamma": WeightSpec((dim,), True),
        f"{name}.beta": WeightSpec((dim,), True),
        f"{name}.moving_mean": WeightSpec((dim,), False),
        f"{name}.moving_variance": WeightSpec((dim,), False),
    }


def _dense(name: str, n_in: int, n_out: int) -> dict[str, WeightSpec]:
    return {
        f"{name}.kernel": WeightSpec((n_in, n_out), True),
        f"{name}.bias": WeightSpec((n_out,), True),
    }


def ifer_spec(num_classes: int) -> dict[str, WeightSpec]:
    """g: 1280, BatchNorm, Dense(512, relu), BatchNorm, Dropout, Dense(K, softmax)."""
    _check_k(num_classes)
    return {
        **_batchnorm("g_bn0", EMBEDDING_DIM),
        **_dense("g_fc512", EMBEDDING_DIM, G_HIDDEN),
        **_batchnorm("g_bn1", G_HIDDEN),
        **_dense("g_out", G_HIDDEN, num_classes),
    }


def vfer_spec(num_classes: int) -> dict[str, WeightSpec]:
    """v: per frame 1280, BN, Dense(128), BN, Dense(64), BN, LSTM(64, last step), Dense(K, softmax)."""
    _check_k(num_classes)
    fc1, fc2 = V_FC
    return {
        **_batchnorm("v_bn0", EMBEDDING_DIM),
        **_dense("v_fc128", EMBEDDING_DIM, fc1),
        **_batchnorm("v_bn1", fc1),
        **_dense("v_fc64", fc1, fc2),
        **_batchnorm("v_bn2", fc2),
        "v_lstm.kernel": WeightSpec((fc2, 4 * V_LSTM), True),
        "v_lstm.recurrent_kernel": WeightSpec((V_LSTM, 4 * V_LSTM), True),
        "v_lstm.bias": WeightSpec((4 * V_LSTM,), True),
        **_dense("v_out", V_LSTM, num_classes),
    }


def trainable_names(spec: dict[str, WeightSpec]) -> list[str]:
    return [name for name, w in spec.items() if w.trainable]


def count_params(spec: dict[str, WeightSpec]) -> dict[str, int]:
    trainable = sum(w.size for w in spec.values() if w.trainable)
    fixed = sum(w.size for w in spec.values() if not w.trainable)
    return {"trainable": trainable, "non_trainable": fixed, "total": trainable + fixed}


def _check_k(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"a head needs at least 2 classes, got {num_classes}")
