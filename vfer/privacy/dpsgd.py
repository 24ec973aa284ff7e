"""DP-SGD fine-tune of v, with one **visit** (the clips of one continuous face track) as the example.

Beside :func:`vfer.personalize.finetune_v` and built from the same pieces (:func:`pad_clips`, the
Keras v, named weights): only v's trainable weights move, from the central v, BatchNorm keeps the
central statistics, Adam at the same learning rate. What changes is the gradient of each step:

1. Poisson sampling: every visit joins the step's batch with probability q (the plan's);
2. each sampled visit's gradient (of the mean cross-entropy over its clips) is clipped to an L2
   norm of ``clip``, so a person who stays longer weighs no more than one who passes by;
3. the clipped gradients are summed, Gaussian noise of std z * clip is added to every coordinate,
   and the sum is divided by the expected batch (:func:`vfer.privacy.mechanism.noisy_mean`).

The accountant (:mod:`vfer.privacy.accountant`) says what the plan's ``steps`` such steps spend.
Every step is reported (visits sampled, each gradient norm before and after clipping, the noise
std and the std of the noise drawn), through ``on_step`` and in the result.

``seed=None`` (the node) draws the sampling and the noise from the operating system's entropy: a
noise that someone can regenerate protects nothing. The lab passes a seed to repeat a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vfer import personalization_defaults as defaults
from vfer.heads import build_vfer, get_weights, num_classes_of, set_weights
from vfer.heads_spec import EMBEDDING_DIM
from vfer.personalize import FineTuneResult, pad_clips
from vfer.privacy.accountant import NightPlan
from vfer.privacy.mechanism import NoisyMean, noisy_mean
from vfer.privacy.options import PrivacyError


@dataclass(frozen=True)
class StepRecord:
    step: int
    visits: int  # how many visits Poisson sampling put in this step
    norms_before: np.ndarray  # each sampled visit's gradient norm before clipping
    norms_after: np.ndarray  # and after
    noise_std: float  # z * clip, on each coordinate of the gradient sum
    noise_sample_std: float  # the std of the noise actually drawn this step

    @classmethod
    def of(cls, step: int, visits: int, released: NoisyMean) -> StepRecord:
        return cls(
            step,
            visits,
            released.norms_before,
            released.norms_after,
            released.noise_std,
            released.noise_sample_std,
        )


@dataclass(frozen=True)
class DPFineTuneResult:
    tuned: FineTuneResult  # the weights, losses on the pseudo labels, steps, seconds
    plan: NightPlan  # q, steps, z, the epsilon spent at delta, the clip
    records: tuple[StepRecord, ...]

    @property
    def epsilon(self) -> float:
        return self.plan.epsilon

    @property
    def clipped_share(self) -> float:
        """The share of sampled visit gradients that clipping shortened."""
        before = np.concatenate([r.norms_before for r in self.records] or [np.zeros(0)])
        return float(np.mean(before > self.plan.clip)) if len(before) else 0.0


def _check(
    visits: Sequence[Sequence[np.ndarray]], labels: Sequence[Sequence[int] | np.ndarray], k: int
) -> None:
    if len(visits) != len(labels):
        raise PrivacyError(f"{len(visits)} visits but {len(labels)} label lists")
    for i, (clips, ys) in enumerate(zip(visits, labels, strict=True)):
        if len(clips) == 0 or len(clips) != len(ys):
            raise PrivacyError(
                f"visit {i}: {len(clips)} clips and {len(ys)} labels (need >= 1 each)"
            )
        if min(ys) < 0 or max(ys) >= k:
            raise PrivacyError(f"visit {i}: labels must be in 0..{k - 1}")


class _VisitModel:
    """v in Keras with the two traced functions DP-SGD needs: one visit's mean cross-entropy and
    its gradient (one trace each for any visit size and clip length)."""

    def __init__(self, start: Mapping[str, np.ndarray], k: int, lr: float) -> None:
        import keras
        import tensorflow as tf

        self.model = build_vfer(k)
        set_weights(self.model, start)
        self.variables = self.model.trainable_variables
        self.names = [v.path for v in self.variables]
        self.optimizer = keras.optimizers.Adam(learning_rate=lr)
        loss_fn = keras.losses.SparseCategoricalCrossentropy()
        model, variables = self.model, self.variables
        signature = [
            tf.TensorSpec([None, None, EMBEDDING_DIM], tf.float32),
            tf.TensorSpec([None], tf.int64),
        ]

        @tf.function(input_signature=signature)
        def visit_loss(xb: Any, yb: Any) -> Any:
            return loss_fn(yb, model(xb, training=False))

        @tf.function(input_signature=signature)
        def visit_grad(xb: Any, yb: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=False))
            return tape.gradient(loss, variables)

        self._loss, self._grad = visit_loss, visit_grad

    def template(self) -> dict[str, np.ndarray]:
        return {
            n: np.zeros(v.shape, np.float32)
            for n, v in zip(self.names, self.variables, strict=True)
        }

    def mean_loss(self, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> float:
        total = sum(float(self._loss(x, y)) * len(y) for x, y in zip(xs, ys, strict=True))
        return total / sum(len(y) for y in ys)

    def gradient(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        return {n: g.numpy() for n, g in zip(self.names, self._grad(x, y), strict=True)}

    def apply(self, step: Mapping[str, np.ndarray]) -> None:
        import tensorflow as tf

        pairs = zip(self.names, self.variables, strict=True)
        self.optimizer.apply_gradients([(tf.constant(step[n]), v) for n, v in pairs])


def finetune_v_dp(
    start: Mapping[str, np.ndarray],
    visits: Sequence[Sequence[np.ndarray]],
    labels: Sequence[Sequence[int] | np.ndarray],
    plan: NightPlan,
    *,
    lr: float = defaults.LR,
    seed: int | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> DPFineTuneResult:
    """Fine-tune v from ``start`` with DP-SGD on ``visits`` (each a list of (frames, 1280) clips)
    and their pseudo ``labels`` (one list per visit), with the sampling rate, steps and noise of
    ``plan`` (:func:`vfer.privacy.accountant.plan_night` for ``len(visits)`` visits)."""
    k = num_classes_of(start, "v")
    _check(visits, labels, k)
    if plan.visits != len(visits):
        raise PrivacyError(f"the plan is for {plan.visits} visits, got {len(visits)}")
    xs = [pad_clips(v) for v in visits]
    ys = [np.asarray(y, np.int64) for y in labels]
    v = _VisitModel(start, k, lr)
    before = v.mean_loss(xs, ys)
    sampler = np.random.default_rng(None if seed is None else [seed, 0])
    noise_rng = np.random.default_rng(None if seed is None else [seed, 1])
    template = v.template()
    records = []
    t0 = time.perf_counter()
    for step in range(plan.steps):
        batch = np.flatnonzero(sampler.random(len(xs)) < plan.sampling_rate)
        released = noisy_mean(
            [v.gradient(xs[i], ys[i]) for i in batch],
            clip=plan.clip,
            noise_multiplier=plan.noise_multiplier,
            denominator=plan.batch_size,
            rng=noise_rng,
            template=template,
        )
        v.apply(released.mean)
        rec = StepRecord.of(step, len(batch), released)
        records.append(rec)
        if on_step is not None:
            on_step(rec)
    train_s = time.perf_counter() - t0
    tuned = FineTuneResult(get_weights(v.model), before, v.mean_loss(xs, ys), plan.steps, train_s)
    return DPFineTuneResult(tuned, plan, tuple(records))
