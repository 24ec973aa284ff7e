"""Central training: the plateau schedule (pure), class weights (vs sklearn), and the Keras loop on tiny data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils.class_weight import compute_class_weight

from training.train import (
    ClipData,
    PlateauSchedule,
    TrainProfile,
    class_weights,
    fit_head,
    train_heads,
)
from vfer.classes import EMOTIONS_4
from vfer.metrics import scores


def test_plateau_halves_after_patience_epochs_without_improvement() -> None:
    s = PlateauSchedule(1e-3, patience=2, min_delta=0.0)
    losses = [1.0, 0.9, 0.95, 0.92, 0.91, 0.85, 0.86, 0.86, 0.86, 0.86]
    lrs = [s.step(x) for x in losses]
    assert lrs == [1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 1.25e-4]


def test_plateau_respects_min_delta_and_floor() -> None:
    s = PlateauSchedule(1e-3, patience=1, min_delta=0.1, min_lr=3e-4)
    assert s.step(1.0) == 1e-3
    assert s.step(0.95) == 5e-4  # better, but not by min_delta
    assert s.step(0.5) == 5e-4
    assert s.step(0.5) == 3e-4  # floored
    assert s.step(0.5) == 3e-4


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=40), st.integers(1, 5))
def test_plateau_properties(losses: list[float], patience: int) -> None:
    s = PlateauSchedule(1e-3, patience=patience, min_delta=0.0)
    lrs = [s.step(x) for x in losses]
    for prev, cur in zip([1e-3, *lrs], lrs, strict=False):
        assert cur in (prev, max(1e-6, prev * 0.5))  # never up, only halved (to the floor)
    # a strictly improving run never halves
    t = PlateauSchedule(1e-3, patience=patience, min_delta=0.0)
    assert {t.step(10.0 - i) for i in range(len(losses))} == {1e-3}


@given(st.lists(st.integers(0, 3), min_size=1, max_size=200))
def test_class_weights_match_sklearn(labels: list[int]) -> None:
    y = np.array(labels)
    ours = class_weights(y, 4)
    present = np.unique(y)
    theirs = compute_class_weight("balanced", classes=present, y=y)
    np.testing.assert_allclose(ours[present], theirs)
    assert np.all(ours[np.setdiff1d(np.arange(4), present)] == 0)


def blobs(n_per_class: list[int], seed: int, dim: int = 1280) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(0, 1, (len(n_per_class), dim))
    x = np.concatenate(
        [c + rng.normal(0, 2.0, (n, dim)) for c, n in zip(centers, n_per_class, strict=True)]
    )
    y = np.concatenate([np.full(n, i) for i, n in enumerate(n_per_class)])
    return x.astype(np.float32), y.astype(np.int64)


@pytest.mark.slow
def test_fit_head_follows_the_schedule_and_weights_the_loss() -> None:
    import keras

    from vfer.heads import build_ifer

    keras.utils.set_random_seed(0)
    x, y = blobs([60, 10, 10, 10], seed=1)
    xd, yd = blobs([5, 5, 5, 5], seed=2)
    yd = np.random.default_rng(3).permutation(yd)  # dev labels unrelated: the dev loss plateaus
    profile = TrainProfile(g_epochs=8, v_epochs=1, patience=2, g_batch=32)
    rows: list[dict[str, object]] = []
    g = build_ifer(4)
    fit_head(g, "g", (x, y), (xd, yd), 8, profile, rows.append)
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    replay = PlateauSchedule(1e-3, patience=2, min_delta=profile.min_delta)
    expected = [1e-3]
    for r in rows[:-1]:
        expected.append(replay.step(float(r["dev_loss"])))  # type: ignore[arg-type]
    assert [r["lr"] for r in rows] == pytest.approx(expected)
    assert min(r["lr"] for r in rows) < 1e-3  # it did halve
    # the kept weights are the best epoch's (dev macro-F1, ties: lower dev loss), and the dev
    # loss is the class-weighted CE
    best_row = max(rows, key=lambda r: (r["dev_macro_f1"], -float(r["dev_loss"])))  # type: ignore[arg-type,operator]
    cw = class_weights(y, 4)
    p = np.asarray(g.predict(xd, verbose=0), np.float64)
    ce = -np.log(np.clip(p[np.arange(len(yd)), yd], 1e-7, 1))
    assert float(np.sum(cw[yd] * ce) / len(yd)) == pytest.approx(best_row["dev_loss"], rel=1e-3)
    got = scores(yd, np.argmax(p, 1), list("abcd"))["macro"]["f1"]
    assert got == pytest.approx(best_row["dev_macro_f1"])
    assert cw[0] < cw[1]  # the majority class weighs less


@pytest.mark.slow
def test_train_heads_pads_whole_clips_and_logs_every_epoch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (4, 1280)).astype(np.float32)

    def clips(n: int, seed: int) -> ClipData:
        r = np.random.default_rng(seed)
        labels = r.integers(0, 4, n)
        data = [
            centers[k] + r.normal(0, 1.5, (int(r.integers(3, 12)), 1280)).astype(np.float32)
            for k in labels
        ]
        return ClipData(data, labels.astype(np.int64), [])

    train, dev = clips(24, 1), clips(8, 2)
    log = tmp_path / "log.jsonl"
    result = train_heads(
        train,
        dev,
        EMOTIONS_4,
        TrainProfile(g_epochs=3, v_epochs=2),
        seed=0,
        progress=False,
        log_path=log,
    )
    assert result.counts["padded_length"] == max(len(c) for c in train.clips + dev.clips)
    assert [(r["head"], r["epoch"]) for r in result.log] == [
        ("g", 1),
        ("g", 2),
        ("g", 3),
        ("v", 1),
        ("v", 2),
    ]
    assert len(log.read_text().splitlines()) == 5
    # v ignores the zero pre-padding: a clip alone or padded inside a batch scores the same
    import keras

    from vfer.heads import build_vfer, set_weights
    from vfer.personalize import pad_clips

    keras.utils.set_random_seed(0)
    v = build_vfer(4)
    set_weights(v, result.vfer_weights)
    short = train.clips[0][:3]
    alone = v.predict(short[None], verbose=0)[0]
    padded = v.predict(
        pad_clips([short, train.clips[1], np.ones((15, 1280), np.float32)]), verbose=0
    )[0]
    np.testing.assert_allclose(alone, padded, atol=1e-5)
    # training learned something on separable data
    pred = v.predict(pad_clips(train.clips), verbose=0).argmax(1)
    assert (pred == train.labels).mean() > 0.5
