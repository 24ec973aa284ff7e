"""Metrics against scikit-learn, the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from vfer.metrics import confusion, macro_f1_text, scores

#: K classes and (true, predicted) pairs
CASES = st.integers(2, 6).flatmap(
    lambda k: st.tuples(
        st.just(k),
        st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60),
    )
)


@settings(max_examples=150, deadline=None)
@given(CASES)
def test_scores_equal_sklearn(case: tuple[int, list[tuple[int, int]]]) -> None:
    k, pairs = case
    y_true = np.array([t for t, _ in pairs])
    y_pred = np.array([p for _, p in pairs])
    classes = [f"c{i}" for i in range(k)]
    s = scores(y_true, y_pred, classes)
    labels = list(range(k))
    for avg in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=avg, zero_division=0
        )
        assert s[avg] == pytest.approx({"precision": p, "recall": r, "f1": f})
    p, r, f, sup = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    for i, name in enumerate(classes):
        assert s["per_class"][name] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": sup[i]}
        )
    assert s["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))


def test_confusion_refuses_bad_labels() -> None:
    with pytest.raises(ValueError, match=r"0\.\.2"):
        confusion(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="equally long"):
        confusion(np.array([0, 1]), np.array([0]), 3)


@settings(max_examples=150, deadline=None)
@given(CASES)
def test_macro_over_present_classes_equals_sklearn_labels_present(
    case: tuple[int, list[tuple[int, int]]],
) -> None:
    k, pairs = case
    y_true = np.array([t for t, _ in pairs])
    y_pred = np.array([p for _, p in pairs])
    s = scores(y_true, y_pred, [f"c{i}" for i in range(k)])
    present = np.unique(y_true)
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=present, average="macro", zero_division=0
    )
    assert s["macro_present"] == pytest.approx(
        {"precision": p, "recall": r, "f1": f, "classes": len(present)}
    )
    if len(present) == k:
        assert s["macro_present"]["f1"] == pytest.approx(s["macro"]["f1"])


def test_a_class_no_face_shows_no_longer_sinks_the_named_macro() -> None:
    """The issue's example: 4 classes, faces that never show one; both conventions, named."""
    y_true = np.array([0, 0, 0, 1, 1, 1, 3, 3, 3, 3])
    y_pred = np.array([0, 0, 1, 1, 1, 2, 3, 3, 3, 0])
    s = scores(y_true, y_pred, ["happiness", "sadness", "anger", "neutral"])
    f_all = f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    f_present = f1_score(y_true, y_pred, labels=[0, 1, 3], average="macro", zero_division=0)
    assert s["macro"]["f1"] == pytest.approx(f_all) and f_all < f_present
    assert s["macro_present"]["f1"] == pytest.approx(f_present)
    text = macro_f1_text(s)
    assert text == f"macro-F1 {f_all:.3f} over all 4 classes, {f_present:.3f} over the 3 present"
    assert macro_f1_text(scores(y_true, y_true, ["a", "b", "c", "d"])) != text
    assert "all 2 classes present" in macro_f1_text(scores(y_true % 2, y_true % 2, ["a", "b"]))
    empty = scores(np.zeros(0, np.int64), np.zeros(0, np.int64), ["a", "b"])
    assert empty["macro_present"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "classes": 0}
