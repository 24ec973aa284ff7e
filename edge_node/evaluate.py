"""``python -m edge_node evaluate``: score a bundle on a labelled manifest through the node's models.

Each row of ``M.csv`` (``path,subject,label``: a still image, a video or a folder of frames; labels
read with :func:`vfer.classes.normalize_label`) runs through the node's own components: the face
cropper with the node's face settings, then the capture loop's :class:`~edge_node.models.Models`
on every face crop (f, g per frame, v's streaming step over the clip, the bundle's external
teacher). A clip's predictions are:

* ``g``: Eq. 1, the mean of g's frame probabilities; ``teacher``: the mean of the teacher's;
* ``v``: v's probabilities after the clip's last face frame;
* ``ensemble``: the mean of the ``g`` and ``teacher`` clip probabilities;
* ``display``: what the kiosk's ``display`` choice shows (:mod:`edge_node.display`).

Each key holds per-class precision/recall/F1/support, macro, micro, accuracy and the confusion
matrix. Rows whose label is not among the bundle's classes, rows without a face and rows that
cannot be decoded are counted in ``rows`` (with the first few named), never silently dropped.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from edge_node.display import DEFAULT_DISPLAY, Display, effective_display, ensemble
from edge_node.models import Models
from vfer.classes import normalize_label
from vfer.faces import FaceCropper
from vfer.metrics import scores

MAX_ROWS = 100_000
MAX_FRAMES = 10_000  # per row: a clip longer than this is cut (counted)


@dataclass
class Rows:
    used: int = 0
    label_not_in_classes: Counter[str] = field(default_factory=Counter)
    no_face: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    truncated: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "used": self.used,
            "label_not_in_classes": sum(self.label_not_in_classes.values()),
            "labels_not_in_classes": dict(self.label_not_in_classes),
            "no_face": len(self.no_face),
            "no_face_first": self.no_face[:5],
            "failed": len(self.failed),
            "failed_first": self.failed[:5],
            "truncated_to_max_frames": self.truncated,
        }


def read_manifest(path: Path) -> list[tuple[Path, str, str]]:
    """(path, subject, label) per row; paths relative to the CSV's folder. Bad rows are errors."""
    if not path.is_file():
        raise FileNotFoundError(f"no such manifest: {path}")
    out: list[tuple[Path, str, str]] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in ("path", "subject", "label") if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
        for line, row in enumerate(reader, start=2):
            if len(out) >= MAX_ROWS:
                raise ValueError(f"{path}: more than {MAX_ROWS} rows")
            p, subject = (row.get("path") or "").strip(), (row.get("subject") or "").strip()
            label = normalize_label(row.get("label") or "")
            if not p or not subject or not label:
                raise ValueError(f"{path}:{line}: path, subject and label must not be empty")
            src = Path(p) if Path(p).is_absolute() else path.parent / p
            out.append((src, subject, label))
    return out


def clip_probs(models: Models, cropper: FaceCropper, frames: Any) -> dict[str, np.ndarray] | None:
    """Clip-level probabilities of every model, or None when no frame has a face."""
    cropper.reset()
    models.vfer.reset()
    g_rows, t_rows, n = [], [], 0
    v_probs: np.ndarray | None = None
    for rgb in frames:
        n += 1
        if n > MAX_FRAMES:
            break
        face = cropper.crop(rgb)
        if face is None:
            continue
        out = models.predict(rgb, face)
        g_rows.append(out.ifer)
        v_probs = out.vfer
        if out.teacher is not None:
            t_rows.append(out.teacher)
    if not g_rows:
        return None
    probs = {"g": np.mean(g_rows, axis=0), "v": cast(np.ndarray, v_probs).copy()}
    if t_rows:
        probs["teacher"] = np.mean(t_rows, axis=0)
        probs["ensemble"] = ensemble(probs["g"], probs["teacher"])
    probs["_truncated"] = np.array([n > MAX_FRAMES])
    return probs


DISPLAY_SOURCE = {"vfer": "v", "ifer": "g", "teacher": "teacher", "ensemble": "ensemble"}


def score_rows(
    models: Models, cropper: FaceCropper, rows: list[tuple[Path, str, str]], tally: Rows
) -> tuple[list[int], dict[str, list[int]]]:
    """(true class per used row, predicted class per model key and used row); ``tally`` counts
    the rows left out and why."""
    from vfer.video import FrameReader

    classes = models.bundle.classes
    truth: list[int] = []
    preds: dict[str, list[int]] = {}
    for src, _subject, label in rows:
        if label not in classes:
            tally.label_not_in_classes[label] += 1
            continue
        try:
            probs = clip_probs(models, cropper, iter(FrameReader.open(src)))
        except (OSError, ValueError) as exc:
            tally.failed.append(f"{src}: {exc}")
            continue
        if probs is None:
            tally.no_face.append(str(src))
            continue
        tally.truncated += int(probs.pop("_truncated")[0])
        tally.used += 1
        truth.append(classes.index(label))
        for key, p in probs.items():
            preds.setdefault(key, []).append(int(np.argmax(p)))
    return truth, preds


def evaluate(
    bundle_path: Path,
    manifest: Path,
    face_model: Path,
    *,
    display: Display = DEFAULT_DISPLAY,
    margin: float = 0.25,
    min_confidence: float = 0.7,
) -> dict[str, Any]:
    """Score every model of the bundle on the manifest's rows; the JSON the command prints."""
    rows = read_manifest(manifest)
    tally = Rows()
    models = Models.load(bundle_path)
    try:
        with FaceCropper.from_path(face_model, min_confidence, margin) as cropper:
            truth, preds = score_rows(models, cropper, rows, tally)
    finally:
        models.close()
    bundle, classes = models.bundle, models.bundle.classes
    y = np.asarray(truth, dtype=np.int64)
    used = effective_display(display, bundle.has_teacher)
    out: dict[str, Any] = {
        key: scores(y, np.asarray(p, dtype=np.int64), classes) for key, p in preds.items()
    }
    if DISPLAY_SOURCE[used] in out:
        out["display"] = {**out[DISPLAY_SOURCE[used]], "choice": used, "configured": display}
    out["meta"] = {
        "bundle": str(bundle_path),
        "bundle_id": bundle.bundle_id,
        "head_version": bundle.manifest.head_version,
        "classes": list(classes),
        "teacher": bundle.has_teacher,
        "manifest": str(manifest),
        "rows": {"total": len(rows), **tally.summary()},
    }
    return out
