"""The linear probe printed beside g in every table1 report.

A multinomial logistic regression (scikit-learn, standardized inputs, sklearn's "balanced" class
weights as g's loss has, C = 1) fitted on exactly the frames g trains on, scored on the same test
frames. It says what a plain linear read-out of the same embeddings reaches, so a g below it is a
recipe problem, not a feature problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeResult:
    probs: np.ndarray  # (N, K) on the scored frames
    train_frames: int


def fit_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    num_classes: int,
    *,
    seed: int = 0,
    c: float = 1.0,
) -> ProbeResult:
    """Fit on (x_train, y_train), return K-column probabilities for ``x_test``.

    A class absent from the training frames gets probability 0 (its column is kept, so the
    argmax is an index into the bundle's classes).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train = np.asarray(x_train, dtype=np.float64)
    y_train = np.asarray(y_train, dtype=np.int64)
    if len(x_train) == 0 or len(np.unique(y_train)) < 2:
        raise ValueError(
            f"the probe needs training frames of at least 2 classes, got {len(x_train)} frames "
            f"of {len(np.unique(y_train))} class(es)"
        )
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed),
    )
    model.fit(x_train, y_train)
    out = np.zeros((len(x_test), num_classes), dtype=np.float64)
    if len(x_test):
        out[:, model.classes_] = model.predict_proba(np.asarray(x_test, dtype=np.float64))
    return ProbeResult(out, len(x_train))
