"""``python -m training distill``: g and v from *unlabelled* face videos or photos, taught by a teacher.

Every source under ``--videos`` (video files, still images, or folders of frames) runs through the
node's face cropper and the external teacher (:mod:`vfer.teachers`: either kind, through its own
preprocessing, ``predict_face``) frame by frame; the clip's
label is Eq. 1: the argmax of the mean of the teacher's frame probabilities, kept when that mean
reaches ``p_threshold`` (the paper's 0.5). g and v are then trained on the kept sources exactly as
``train`` does (:func:`training.train.train_central`), and the bundle carries the teacher.

Each source is its own subject unless ``subject_from="folder"`` (its parent folder's name); one
subject in five is held out as dev. Sources without a face or below the threshold are counted.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from training.corpora import Corpus, Record
from vfer.selection import clip_mean_probs
from vfer.video import IMAGE_SUFFIXES, FrameReader, VideoError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".flv", ".webm", ".m4v"})


@dataclass
class Labelled:
    corpus: Corpus
    probs: dict[str, list[float]] = field(default_factory=dict)  # source -> Eq. 1 mean


def sources(root: Path) -> list[Path]:
    """Video files and images under ``root`` (recursively), or ``root`` itself if it is a file."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    found = [
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
    ]
    return sorted(found)


def teacher_label(
    mean_probs: np.ndarray, classes: tuple[str, ...], p_threshold: float
) -> str | None:
    """Eq. 1 for one clip: the class of the largest mean probability, if it reaches the threshold."""
    i = int(np.argmax(mean_probs))
    return classes[i] if float(mean_probs[i]) >= p_threshold else None


def label_sources(
    root: Path,
    teacher: Path,
    face_model: Path,
    classes: tuple[str, ...],
    *,
    p_threshold: float = 0.5,
    subject_from: Literal["source", "folder"] = "source",
    max_frames: int = 300,
) -> Labelled:
    """The teacher's Eq. 1 label for every source under ``root``, as a corpus (split train)."""
    from vfer.faces import FaceCropper
    from vfer.teachers import open_teacher

    counts: Counter[str] = Counter()
    records: list[Record] = []
    probs: dict[str, list[float]] = {}
    with (
        FaceCropper.from_path(face_model) as cropper,
        contextlib.closing(open_teacher(teacher, classes)) as t,
    ):
        for src in sources(root):
            cropper.reset()
            rows = []
            try:
                for n, rgb in enumerate(FrameReader.open(src)):
                    if n >= max_frames:
                        break
                    face = cropper.crop(rgb)
                    if face is not None:
                        rows.append(t.predict_face(rgb, face))
            except (OSError, VideoError) as exc:
                log.warning("%s: cannot be read, left out: %s", src, exc)
                counts["unreadable"] += 1
                continue
            if not rows:
                counts["no_face"] += 1
                continue
            mean = clip_mean_probs(np.asarray(rows))  # Eq. 1
            probs[str(src)] = [round(float(x), 4) for x in mean]
            label = teacher_label(mean, classes, p_threshold)
            if label is None:
                counts["below_threshold"] += 1
                continue
            subject = src.parent.name if subject_from == "folder" else src.stem
            records.append(Record(src, subject, label, "train"))
    counts.update(f"label_{r.label}" for r in records)
    return Labelled(Corpus("distilled", classes, records, dict(counts)), probs)
