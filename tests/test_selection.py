"""The pseudo-label selection rule on hand-made probability tables, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vfer.selection import SelectionError, mean_frame_probs, pseudo_labels, select_clips


def test_eq1_mean_of_frame_probabilities_then_argmax() -> None:
    clip = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])  # per-frame majority says class 1
    means = mean_frame_probs([clip])
    np.testing.assert_allclose(means, [[14 / 30, 16 / 30]])
    labels, conf = pseudo_labels(means)
    assert labels.tolist() == [1] and conf[0] == pytest.approx(16 / 30)


def test_more_than_p_candidates_keeps_the_most_confident() -> None:
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.7, 0.3], [0.8, 0.2], [0.2, 0.8]])
    sel = select_clips(probs, p=2, p_threshold=0.5)
    assert sel.indices.tolist() == [1, 3, 4]  # class 0: 0.9, 0.8; class 1: 0.8
    assert sel.per_class.tolist() == [2, 1]
    assert sel.candidates_per_class.tolist() == [4, 1]


def test_ties_between_classes_and_between_clips() -> None:
    # equal class probabilities: the lower class index wins; equal confidences: the earlier clip wins
    probs = np.array([[0.5, 0.5, 0.0], [0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.6, 0.4, 0.0]])
    sel = select_clips(probs, p=2, p_threshold=0.5)
    assert sel.labels.tolist() == [0, 0]
    assert sel.indices.tolist() == [1, 2]


def test_empty_classes_and_threshold_boundary() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.49, 0.5, 0.01]])
    sel = select_clips(probs, p=15, p_threshold=0.5)
    assert sel.per_class.tolist() == [1, 1, 0]  # 0.5 is kept (>=), class 2 empty
    assert sel.below_threshold == 0


def test_everything_under_the_threshold_selects_nothing() -> None:
    probs = np.full((4, 4), 0.25)
    sel = select_clips(probs, p=15, p_threshold=0.5)
    assert sel.count == 0 and sel.below_threshold == 4
    assert sel.per_class.tolist() == [0, 0, 0, 0]


def test_p_zero_selects_nothing() -> None:
    sel = select_clips(np.array([[0.9, 0.1]]), p=0, p_threshold=0.0)
    assert sel.count == 0 and sel.candidates_per_class.tolist() == [1, 0]


def test_bad_input_is_refused() -> None:
    with pytest.raises(SelectionError, match="P must be"):
        select_clips(np.array([[0.9, 0.1]]), p=-1, p_threshold=0.5)
    with pytest.raises(SelectionError, match="p_threshold"):
        select_clips(np.array([[0.9, 0.1]]), p=1, p_threshold=1.5)
    with pytest.raises(SelectionError, match="NaN"):
        select_clips(np.array([[np.nan, 0.1]]), p=1, p_threshold=0.5)
    with pytest.raises(SelectionError, match="disagree on K"):
        mean_frame_probs([np.ones((2, 3)) / 3, np.ones((2, 4)) / 4])


@settings(max_examples=200, deadline=None)
@given(
    probs=arrays(
        np.float64, st.tuples(st.integers(0, 40), st.integers(2, 6)), elements=st.floats(0, 1)
    ),
    p=st.integers(0, 10),
    thr=st.floats(0, 1),
)
def test_invariants(probs: np.ndarray, p: int, thr: float) -> None:
    sel = select_clips(probs, p=p, p_threshold=thr)
    labels, conf = pseudo_labels(probs) if len(probs) else (np.array([], int), np.array([]))
    assert len(set(sel.indices.tolist())) == sel.count  # no clip twice
    assert (sel.per_class <= p).all()
    assert (sel.confidence >= thr).all()
    assert sel.per_class.sum() == sel.count
    assert (sel.per_class == np.minimum(sel.candidates_per_class, p)).all()
    for c in range(probs.shape[1]):
        mine = sel.confidence[sel.labels == c]
        assert (np.diff(mine) <= 0).all()  # most confident first
        # nothing left out of class c is more confident than what was kept
        left = [
            i
            for i in range(len(probs))
            if labels[i] == c and conf[i] >= thr and i not in sel.indices
        ]
        if left and len(mine):
            assert max(conf[left]) <= mine.min()


def test_balanced_selection_keeps_no_class_above_twice_the_smallest() -> None:
    # class 0: five confident clips, class 1: two, class 2: none above the threshold
    class0 = [[0.95, 0.05, 0], [0.9, 0.1, 0], [0.85, 0.15, 0], [0.8, 0.2, 0], [0.75, 0.25, 0]]
    probs = np.array([*class0, [0.1, 0.9, 0], [0.3, 0.7, 0], [0.4, 0.3, 0.3]])
    paper = select_clips(probs, p=15, p_threshold=0.5)
    assert paper.per_class.tolist() == [5, 2, 0]
    sel = select_clips(probs, p=15, p_threshold=0.5, balance=2.0)
    assert sel.per_class.tolist() == [4, 2, 0]  # the smallest kept class has 2
    assert sel.indices.tolist() == [0, 1, 2, 3, 5, 6]  # the most confident of class 0 stay
    assert sel.candidates_per_class.tolist() == paper.candidates_per_class.tolist()
    assert select_clips(probs, p=15, p_threshold=0.5, balance=1.0).per_class.tolist() == [2, 2, 0]
    for bad in (0.5, float("nan"), 101.0):
        with pytest.raises(SelectionError, match="balance"):
            select_clips(probs, p=15, p_threshold=0.5, balance=bad)


@settings(max_examples=200, deadline=None)
@given(
    probs=arrays(
        np.float64, st.tuples(st.integers(0, 40), st.integers(2, 6)), elements=st.floats(0, 1)
    ),
    p=st.integers(0, 10),
    ratio=st.floats(1, 5),
)
def test_balanced_selection_is_a_most_confident_subset_of_the_papers(
    probs: np.ndarray, p: int, ratio: float
) -> None:
    paper = select_clips(probs, p=p, p_threshold=0.5)
    sel = select_clips(probs, p=p, p_threshold=0.5, balance=ratio)
    assert set(sel.indices.tolist()) <= set(paper.indices.tolist())
    kept = sel.per_class[sel.per_class > 0]
    if len(kept):
        assert kept.max() <= np.floor(ratio * kept.min() + 1e-9)
        # classes keep the same smallest size: only the larger ones are cut
        assert kept.min() == paper.per_class[paper.per_class > 0].min()
    for c in range(probs.shape[1]):
        assert (
            sel.indices[sel.labels == c].tolist()
            == paper.indices[paper.labels == c][: sel.per_class[c]].tolist()
        )
