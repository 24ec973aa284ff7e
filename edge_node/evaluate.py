"""``python -m edge_node evaluate``: score a bundle on a labelled manifest through the node's models.

Each row of ``M.csv`` (``path,subject,label``: a still image, a video or a folder of frames) runs
through the node's own components: the MediaPipe face cropper with the node's face settings, f on
the crop, g per frame, v's streaming step over the clip, and the bundle's external teacher on the
crop. A clip's predictions are:

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
from vfer.bundle import BACKBONE, IFER_TFLITE, VFER_STEP, Bundle
from vfer.metrics import scores

LABEL_SYNONYMS = {"happy": "happiness", "smiling": "happiness", "angry": "anger", "sad": "sadness"}
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
            label = (row.get("label") or "").strip().lower()
            if not p or not subject or not label:
                raise ValueError(f"{path}:{line}: path, subject and label must not be empty")
            src = Path(p) if Path(p).is_absolute() else path.parent / p
            out.append((src, subject, LABEL_SYNONYMS.get(label, label)))
    return out


class NodeModels:
    """The node's components for one bundle: cropper, f, g, v's step and the teacher if any."""

    def __init__(self, bundle: Bundle, face_model: Path, margin: float, min_confidence: float):
        from vfer.backbone import Backbone
        from vfer.faces import FaceCropper
        from vfer.runtime import IferHead, VferStep

        self.bundle = bundle
        self.cropper = FaceCropper.from_path(face_model, min_confidence, margin)
        self.f = Backbone.from_path(bundle.file(BACKBONE), 2)
        self.g = IferHead.from_path(bundle.file(IFER_TFLITE))
        self.v = VferStep.from_path(bundle.file(VFER_STEP))
        self.teacher = bundle.teacher() if bundle.has_teacher else None

    def clip(self, frames: Any) -> dict[str, np.ndarray] | None:
        """Clip-level probabilities of every model, or None when no frame has a face."""
        self.cropper.reset()
        self.v.reset()
        g_rows, t_rows, n = [], [], 0
        v_probs: np.ndarray | None = None
        for rgb in frames:
            n += 1
            if n > MAX_FRAMES:
                break
            face = self.cropper.crop(rgb)
            if face is None:
                continue
            e = self.f.embed(face.image)
            g_rows.append(self.g.predict_frame(e))
            v_probs = self.v.step(e)
            if self.teacher is not None:
                t_rows.append(self.teacher.predict_face(rgb, face))
        if not g_rows:
            return None
        out = {"g": np.mean(g_rows, axis=0), "v": cast(np.ndarray, v_probs).copy()}
        if t_rows:
            out["teacher"] = np.mean(t_rows, axis=0)
            out["ensemble"] = ensemble(out["g"], out["teacher"])
        out["_truncated"] = np.array([n > MAX_FRAMES])
        return out

    def close(self) -> None:
        for m in (self.cropper, self.f, self.g, self.v, self.teacher):
            if m is not None:
                m.close()


DISPLAY_SOURCE = {"vfer": "v", "ifer": "g", "teacher": "teacher", "ensemble": "ensemble"}


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
    from vfer.video import FrameReader

    bundle = Bundle.load(bundle_path)
    classes = bundle.classes
    rows = read_manifest(manifest)
    tally = Rows()
    truth: list[int] = []
    preds: dict[str, list[int]] = {}
    models = NodeModels(bundle, face_model, margin, min_confidence)
    try:
        for src, _subject, label in rows:
            if label not in classes:
                tally.label_not_in_classes[label] += 1
                continue
            try:
                probs = models.clip(iter(FrameReader.open(src)))
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
    finally:
        models.close()
    y = np.asarray(truth, dtype=np.int64)
    used = effective_display(display, bundle.has_teacher)
    out: dict[str, Any] = {
        key: scores(y, np.asarray(p, dtype=np.int64), classes) for key, p in preds.items()
    }
    if DISPLAY_SOURCE[used] in out:
        out["display"] = {**out[DISPLAY_SOURCE[used]], "choice": used, "configured": display}
    out["meta"] = {
        "bundle": str(bundle.path),
        "bundle_id": bundle.bundle_id,
        "head_version": bundle.manifest.head_version,
        "classes": list(classes),
        "teacher": bundle.has_teacher,
        "manifest": str(manifest),
        "rows": {"total": len(rows), **tally.summary()},
    }
    return out
