"""Any corpus as a CSV manifest: ``path,subject,label[,split][,gender]``, one clip or image a row.

``path`` is a video file, a still image, or a folder of frames, relative to the CSV's folder (or
absolute). ``label`` is a class name or a spelling :data:`vfer.classes.LABEL_SYNONYMS` maps to
one (``happy`` is read as happiness). ``split`` is ``train``, ``dev``, ``test`` or empty. Rows
whose label is not among the chosen classes are dropped and counted; anything else wrong is an
error naming the line.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from training.corpora.record import (
    SPLITS,
    Corpus,
    Record,
    Split,
    normalize_gender,
)
from vfer.classes import normalize_label, validate_classes

REQUIRED = ("path", "subject", "label")


def load_manifest(
    csv_path: str | Path,
    classes: tuple[str, ...] | None = None,
    *,
    name: str = "manifest",
    check_files: bool = True,
) -> Corpus:
    """Read a manifest; ``classes=None`` takes the labels it holds, sorted."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"no such manifest: {csv_path}")
    base = csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {missing}; header is {header}")
        rows = [
            (line, {k.strip(): (v or "").strip() for k, v in row.items() if k})
            for line, row in enumerate(reader, start=2)
        ]
    labels = [normalize_label(r["label"]) for _, r in rows]
    chosen = validate_classes(classes) if classes is not None else tuple(sorted(set(labels)))
    counts: Counter[str] = Counter()
    records: list[Record] = []
    absent: list[str] = []
    for (line, row), label in zip(rows, labels, strict=True):
        where = f"{csv_path}:{line}"
        if not row["path"] or not row["subject"] or not label:
            raise ValueError(f"{where}: path, subject and label must not be empty")
        split = row.get("split", "").lower()
        if split and split not in SPLITS:
            raise ValueError(
                f"{where}: split must be train, dev, test or empty, got {row['split']!r}"
            )
        if label not in chosen:
            counts["label_not_in_classes"] += 1
            continue
        path = Path(row["path"])
        path = path if path.is_absolute() else base / path
        if check_files and not path.exists():
            absent.append(f"line {line}: {path}")
            continue
        split_value: Split | None = split or None  # type: ignore[assignment]
        records.append(
            Record(path, row["subject"], label, split_value, normalize_gender(row.get("gender")))
        )
    if absent:
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        raise FileNotFoundError(f"{csv_path}: missing files: {'; '.join(absent[:3])}{more}")
    return Corpus(name, chosen, records, dict(counts))
