"""Issue 27, item 1: the gate's candidate signals, each a pure function held to hand-made cases,
and the scoring of them (AUC, the enforced gate) against oracles."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.experiments import signals as ev
from vfer import gate_signals as gs


def onehot(labels: list[int], k: int = 3, p: float = 0.8) -> np.ndarray:
    out = np.full((len(labels), k), (1 - p) / (k - 1))
    out[np.arange(len(labels)), labels] = p
    return out


def test_teacher_disagreement_is_how_much_less_the_new_head_agrees() -> None:
    teacher = np.array([0, 1, 2, 0])
    cur, new = onehot([0, 1, 2, 1]), onehot([0, 2, 2, 1])
    assert gs.teacher_disagreement(new, cur, teacher) == pytest.approx(0.75 - 0.5)
    assert gs.teacher_disagreement(cur, cur, teacher) == 0.0


def test_entropy_drop_is_positive_for_a_surer_head() -> None:
    unsure, sure = onehot([0, 1], p=0.4), onehot([0, 1], p=0.99)
    assert gs.entropy_drop(sure, unsure) > 0 > gs.entropy_drop(unsure, sure)
    assert gs.mean_entropy(np.full((2, 4), 0.25)) == pytest.approx(1.0)


def test_class_shift_is_the_total_variation_of_the_histograms() -> None:
    assert gs.class_shift(onehot([0, 0, 0, 0]), onehot([0, 1, 2, 0])) == pytest.approx(0.5)
    assert gs.class_shift(onehot([1, 0]), onehot([0, 1])) == 0.0


def test_instability_compares_flip_rates() -> None:
    a, b = onehot([0, 1, 2, 0]), onehot([0, 1, 1, 1])
    assert gs.flip_rate(a, b) == 0.5
    assert gs.instability(a, b, a, a) == 0.5 and gs.instability(a, a, a, b) == -0.5


def test_perturbations_keep_order_and_at_least_one_frame() -> None:
    clip = np.arange(20)[:, None] * np.ones((1, 3))
    dropped = gs.drop_frames(clip, np.random.default_rng(0))
    assert len(dropped) == 14 and np.all(np.diff(dropped[:, 0]) > 0)
    assert len(gs.drop_frames(clip[:1], np.random.default_rng(0))) == 1
    assert len(gs.first_half(clip)) == 10 and len(gs.first_half(clip[:1])) == 1


def test_combined_is_the_equal_weight_mean_of_its_parts() -> None:
    values = dict.fromkeys(gs.COMBINED_OF, 0.2) | {"entropy_drop": 9.0}
    values["class_shift"] = 0.6
    assert gs.combined(values) == pytest.approx(0.3)
    assert np.isnan(gs.combined({}))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(gs.SignalError):
        gs.class_shift(onehot([0]), onehot([0, 1]))
    with pytest.raises(gs.SignalError):
        gs.entropy_drop(np.array([[np.nan, 1.0]]), onehot([0], k=2))
    with pytest.raises(gs.SignalError):
        gs.agreement(onehot([0, 1]), np.array([0]))


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60).astype(float)
    y = rng.random(60) < 0.4
    assert ev.auc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(ev.auc(s, np.zeros(60, bool)))


def test_the_enforced_gate_counts_what_it_stops_and_passes() -> None:
    values = np.array([0.9, 0.8, 0.1, -0.2, np.nan])
    changes = np.array([-0.1, 0.05, 0.2, -0.05, 0.1])
    out = ev.gate_outcome(values, changes, 0.5)
    assert out["blocked"] == 2
    assert out["mean_gain"] == pytest.approx((0.2 - 0.05 + 0.1) / 5)
    assert out["stops_losing"] == 0.5 and out["passes_gaining"] == pytest.approx(2 / 3)
    assert ev.best_threshold(values, changes) == pytest.approx(0.85)


def test_evaluate_picks_thresholds_on_dev_seeds_and_scores_held_out_ones() -> None:
    rows = []
    for seed in range(4):
        for change in (-0.1, 0.1):
            value = 1.0 if change < 0 else -1.0
            sig = dict.fromkeys(gs.SIGNALS, value)
            rows.append(
                {"seed": seed, "personalized": True, "micro_f1_change": change, "signals": sig}
            )
    out = ev.evaluate(rows, dev_seeds={0, 1})
    assert out["runs"] == {"dev": 4, "held_out": 4}
    combined = out["signals"]["combined"]
    assert combined["auc_held_out"] == 1.0
    assert combined["gate_held_out"]["stops_losing"] == 1.0
    assert combined["gate_held_out"]["mean_gain"] == pytest.approx(0.05)
    assert out["always_install"] == 0.0


def test_the_reverse_probe_carries_consistent_labels_back() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 16))
    y = np.repeat(np.arange(3), 10)
    x = centers[y] + rng.normal(0, 0.5, (30, 16))
    x_test = centers[y] + rng.normal(0, 0.5, (30, 16))
    assert gs.carried_back(x, y, x_test, y, 3) == 1.0
    scrambled = rng.permutation(y)
    assert gs.carried_back(x, scrambled, x_test, y, 3) < 0.7
    assert np.isnan(gs.carried_back(x[:0], y[:0], x_test, y, 3))


def test_measure_on_a_real_v_gives_every_signal() -> None:
    from vfer.heads import build_vfer, get_weights

    rng = np.random.default_rng(1)
    start = get_weights(build_vfer(4))
    tuned = {k: v + rng.normal(0, 0.05, v.shape).astype(v.dtype) for k, v in start.items()}
    clips = [rng.normal(size=(int(rng.integers(6, 12)), 1280)).astype(np.float32) for _ in range(8)]
    out = ev.measure(
        tuned, start, clips[:5], np.array([0, 1, 2, 3, 0]), clips[5:], np.array([0, 1, 2]), 0
    )
    assert set(out) == set(gs.SIGNALS) and all(np.isfinite(v) for v in out.values()), out
    same = ev.measure(
        start, start, clips[:5], np.array([0, 1, 2, 3, 0]), clips[5:], np.array([0, 1, 2]), 0
    )
    assert (
        same["teacher_disagreement"] == same["class_shift"] == same["reverse_disagreement"] == 0.0
    )
    assert all(
        np.isnan(v)
        for v in ev.measure(tuned, start, [], np.zeros(0), clips, np.zeros(8), 0).values()
    )
