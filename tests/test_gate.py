"""The safety gate, a pure decision: hand tables for each rule, and invariants (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfer.gate import GateError, GateOptions, decide, normalized_entropy


def onehot(labels: list[int], k: int = 4, conf: float = 0.7) -> np.ndarray:
    out = np.full((len(labels), k), (1 - conf) / (k - 1))
    out[np.arange(len(labels)), labels] = conf
    return out


SPREAD = [0, 1, 2, 3, 0, 1, 2, 3]


def test_a_good_head_passes() -> None:
    v = decide([3, 2, 0, 1], onehot(SPREAD), onehot([0, 1, 2, 3, 0, 1, 2, 0]), np.array(SPREAD))
    assert v.passed and v.reasons == ()
    assert v.metrics["agreement_new"] == 1.0 and v.metrics["agreement_central"] == 0.875


def test_single_class_selection_is_blocked() -> None:
    v = decide([6, 0, 0, 0], onehot(SPREAD), onehot(SPREAD), np.array(SPREAD))
    assert not v.passed and v.reasons == ("single_class_selection",)


def test_a_collapsed_head_is_blocked() -> None:
    collapsed = onehot([1] * 8)
    v = decide([3, 3, 0, 0], collapsed, onehot(SPREAD), np.array(SPREAD))
    assert not v.passed and "collapsed" in v.reasons
    assert v.metrics["entropy_new"] == 0.0 and v.metrics["top_share"] == 1.0


def test_a_head_the_teacher_agrees_with_less_is_blocked() -> None:
    worse = onehot([1, 0, 3, 2, 0, 1, 2, 3])  # same spread, half agrees
    v = decide([2, 2, 2, 2], worse, onehot(SPREAD), np.array(SPREAD))
    assert not v.passed and v.reasons == ("less_teacher_agreement",)
    lenient = decide(
        [2, 2, 2, 2], worse, onehot(SPREAD), np.array(SPREAD), GateOptions(agreement_tolerance=0.6)
    )
    assert lenient.passed


def test_too_few_held_back_clips_skip_collapse_and_agreement_and_say_so() -> None:
    v = decide([2, 2, 0, 0], onehot([1, 1]), onehot([0, 1]), np.array([0, 1]))
    assert v.passed and "collapse and agreement not checked" in v.summary()
    single = decide([4, 0, 0, 0], onehot([1, 1]), onehot([0, 1]), np.array([0, 1]))
    assert not single.passed and single.reasons == ("single_class_selection",)
    none = decide([2, 2, 0, 0], np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0, dtype=int))
    assert none.passed and none.notes


def test_a_central_that_already_favours_a_class_is_not_called_collapsed() -> None:
    mostly = [2] * 7 + [1]
    v = decide([2, 2, 2, 0], onehot(mostly), onehot(mostly), np.array(mostly))
    assert v.passed, v.summary()


@pytest.mark.parametrize(
    "args",
    [
        ([1, 1, 1], onehot(SPREAD), onehot(SPREAD), np.array(SPREAD)),  # K mismatch
        ([1, 1, 1, 1], onehot(SPREAD), onehot(SPREAD[:4]), np.array(SPREAD)),
        ([1, 1, 1, 1], onehot(SPREAD), onehot(SPREAD), np.array([9] * 8)),
        ([1, 1, 1, 1], onehot(SPREAD) * np.nan, onehot(SPREAD), np.array(SPREAD)),
        ([-1, 1, 1, 1], onehot(SPREAD), onehot(SPREAD), np.array(SPREAD)),
    ],
)
def test_inconsistent_inputs_are_named_errors(args: tuple) -> None:
    with pytest.raises(GateError):
        decide(*args)


def test_options_are_bounded() -> None:
    with pytest.raises(GateError):
        GateOptions(min_entropy_ratio=1.5)
    with pytest.raises(GateError):
        GateOptions(min_classes=0)


def test_normalized_entropy_against_scipy() -> None:
    from scipy.stats import entropy

    labels = np.array([0, 0, 1, 2, 2, 2])
    counts = np.bincount(labels, minlength=4)
    assert normalized_entropy(labels, 4) == pytest.approx(entropy(counts) / np.log(4))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=30),
    st.lists(st.integers(0, 5), min_size=4, max_size=4),
)
def test_identical_heads_never_fail_agreement_or_collapse(
    labels: list[int], sel: list[int]
) -> None:
    probs = onehot(labels)
    v = decide(sel, probs, probs, np.array(labels))
    assert "collapsed" not in v.reasons and "less_teacher_agreement" not in v.reasons
    assert v.passed == (sum(s > 0 for s in sel) >= 2)


def test_signals_are_recorded_and_the_chosen_one_blocks_above_its_bound() -> None:
    sel, new, central, teacher = [3, 2, 0, 1], onehot(SPREAD), onehot(SPREAD), np.array(SPREAD)
    signals = {"combined": 0.2, "class_shift": 0.1, "entropy_drop": float("nan")}
    recorded = decide(sel, new, central, teacher, GateOptions(), signals)
    assert recorded.passed and recorded.metrics["signal_combined"] == 0.2
    assert "signal_entropy_drop" not in recorded.metrics  # unknown values are left out
    blocked = decide(
        sel, new, central, teacher, GateOptions(signal="combined", max_signal=0.1), signals
    )
    assert not blocked.passed and blocked.reasons == ("signal_combined",)
    unknown = decide(sel, new, central, teacher, GateOptions(signal="entropy_drop"), signals)
    assert unknown.passed  # a signal that could not be computed blocks nothing
    with pytest.raises(GateError):
        GateOptions(signal="vibes")
    with pytest.raises(GateError):
        GateOptions(signal="combined", max_signal=float("nan"))
