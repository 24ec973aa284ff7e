"""How one head is fitted: the training profile, the plateau schedule, class weights, exact
BatchNorm statistics and the epoch loop (the recipe :mod:`training.train` describes).

Pure schedule and weights; TensorFlow is imported lazily by the functions that train.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vfer.metrics import scores


@dataclass(frozen=True)
class TrainProfile:
    """How long and how hard to train. :data:`FULL` is the paper's; :data:`QUICK` runs in minutes."""

    g_epochs: int = 60
    v_epochs: int = 20
    lr: float = 1e-3
    g_batch: int = 128
    v_batch: int = 16
    patience: int = 3  # epochs without a dev-loss improvement before halving
    factor: float = 0.5
    min_lr: float = 1e-6
    min_delta: float = 1e-4
    #: recompute g's BatchNorm statistics on the training frames after every epoch
    precise_bn: bool = True
    #: which g epoch is kept: the best dev macro-F1 (ties: lower loss) or the lowest dev loss
    g_select: str = "macro_f1"
    #: g's decoupled weight decay (AdamW; 0: plain Adam) and its learning rate (None: ``lr``)
    g_weight_decay: float = 0.05
    g_lr: float | None = None

    def __post_init__(self) -> None:
        if self.g_epochs < 1 or self.v_epochs < 1:
            raise ValueError(f"epochs must be >= 1, got g {self.g_epochs}, v {self.v_epochs}")
        if not 0 < self.factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {self.factor}")
        if self.g_select not in ("macro_f1", "loss"):
            raise ValueError(f"g_select must be macro_f1 or loss, got {self.g_select!r}")


FULL = TrainProfile()
QUICK = TrainProfile(g_epochs=20, v_epochs=12, patience=2)


class PlateauSchedule:
    """Halve the learning rate when the dev loss has not improved for ``patience`` epochs. Pure.

    ``step(dev_loss)`` is called after each epoch and returns the learning rate for the next one.
    An improvement is a loss below the best so far by more than ``min_delta``; after a halving
    the count starts again (Keras' ReduceLROnPlateau without cooldown).
    """

    def __init__(
        self,
        lr: float,
        *,
        factor: float = 0.5,
        patience: int = 3,
        min_lr: float = 1e-6,
        min_delta: float = 1e-4,
    ) -> None:
        self.lr = lr
        self.factor = factor
        self.patience = patience
        self.min_lr = min_lr
        self.min_delta = min_delta
        self.best = float("inf")
        self.wait = 0

    def step(self, dev_loss: float) -> float:
        if dev_loss < self.best - self.min_delta:
            self.best = dev_loss
            self.wait = 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.lr = max(self.min_lr, self.lr * self.factor)
                self.wait = 0
        return self.lr


def class_weights(labels: np.ndarray, k: int) -> np.ndarray:
    """sklearn's "balanced" weights ``n / (K * n_c)``; a class with no sample gets 0."""
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    present = counts > 0
    out = np.zeros(k, dtype=np.float64)
    out[present] = len(y) / (present.sum() * counts[present])
    return out


EpochLog = Callable[[dict[str, Any]], None]


def precise_bn(model: Any, x: np.ndarray, batch: int = 4096) -> None:
    """Set every BatchNorm's moving mean and variance to the exact statistics of its input on ``x``.

    Layer by layer in order, so each one sees the inputs the already recalibrated layers give.
    For models without masking or time axes (g); v keeps Keras' running averages.
    """
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            sub = keras.Model(model.inputs, layer.input)
            h = np.asarray(sub.predict(x, batch_size=batch, verbose=0), dtype=np.float64)
            h = h.reshape(-1, h.shape[-1])
            layer.moving_mean.assign(h.mean(axis=0).astype(np.float32))
            layer.moving_variance.assign(h.var(axis=0).astype(np.float32))


def fit_head(
    model: Any,
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    dev: tuple[np.ndarray, np.ndarray],
    epochs: int,
    profile: TrainProfile,
    on_epoch: EpochLog,
) -> list[dict[str, Any]]:
    """Train ``model`` with class-weighted CE and plateau halving; keep the best dev epoch.

    g: BatchNorm statistics recomputed after each epoch (``profile.precise_bn``) and the epoch with
    the best dev macro-F1 kept (``profile.g_select``); v: the epoch with the lowest dev loss.
    """
    import keras

    k = int(model.output_shape[-1])
    x, y = train
    xd, yd = dev
    cw = class_weights(y, k)
    batch = profile.g_batch if name == "g" else profile.v_batch
    lr = profile.g_lr if name == "g" and profile.g_lr else profile.lr
    wd = profile.g_weight_decay if name == "g" else 0.0
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=wd)
        if wd > 0
        else keras.optimizers.Adam(learning_rate=lr),
        loss=keras.losses.SparseCategoricalCrossentropy(),
    )
    schedule = PlateauSchedule(
        lr,
        factor=profile.factor,
        patience=profile.patience,
        min_lr=profile.min_lr,
        min_delta=profile.min_delta,
    )
    rows: list[dict[str, Any]] = []
    by_f1 = name == "g" and profile.g_select == "macro_f1"
    best_key, best_weights = (-float("inf"), -float("inf")), model.get_weights()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        lr = schedule.lr
        model.optimizer.learning_rate.assign(lr)
        hist = model.fit(
            x,
            y,
            batch_size=batch,
            epochs=1,
            class_weight=dict(enumerate(cw.tolist())),
            shuffle=True,
            verbose=0,
        )
        if name == "g" and profile.precise_bn:
            precise_bn(model, x)
        dev_loss = float(
            model.evaluate(xd, yd, sample_weight=cw[yd], batch_size=4 * batch, verbose=0)
        )
        dev_f1 = None
        if by_f1:
            pred = np.argmax(model.predict(xd, batch_size=4 * batch, verbose=0), axis=1)
            dev_f1 = scores(yd, pred, [f"c{i}" for i in range(k)])["macro"]["f1"]
        key = (dev_f1 if dev_f1 is not None else 0.0, -dev_loss)
        if key > best_key:
            best_key, best_weights = key, model.get_weights()
        schedule.step(dev_loss)
        row = {
            "head": name,
            "epoch": epoch + 1,
            "train_loss": float(hist.history["loss"][-1]),
            "dev_loss": dev_loss,
            **({"dev_macro_f1": dev_f1} if dev_f1 is not None else {}),
            "lr": lr,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        rows.append(row)
        on_epoch(row)
    model.set_weights(best_weights)
    return rows


def train_g(
    train: tuple[np.ndarray, np.ndarray],
    dev: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    profile: TrainProfile,
    *,
    seed: int = 0,
    on_epoch: EpochLog | None = None,
) -> dict[str, np.ndarray]:
    """g alone on frames (the recipe of :func:`fit_head`); returns its named weights."""
    import keras

    from vfer.heads import build_ifer, get_weights

    keras.utils.set_random_seed(seed)
    g = build_ifer(num_classes)
    fit_head(g, "g", train, dev, profile.g_epochs, profile, on_epoch or (lambda row: None))
    return get_weights(g)
