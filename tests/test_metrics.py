"""Metrics against scikit-learn, the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from vfer.metrics import confusion, scores


@settings(max_examples=150, deadline=None)
@given(
    st.integers(2, 6).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(
                st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60
            ),
        )
    )
)
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
