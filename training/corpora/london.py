"""The Face Research Lab London Set as a manifest: ``london.csv`` from its ``faces.csv``.

102 adults, each photographed neutral (``neutral/NNN_03.jpg``) and smiling (``smiling/NNN_08.jpg``).
The set's ``expression`` column says ``neutral`` or ``smiling``; smiling is written as the class
``happiness``. Paths are absolute, so the CSV may live anywhere (it is written, never committed).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from vfer.atomic import atomic_write_text

EXPRESSION_TO_LABEL = {"neutral": "neutral", "smiling": "happiness", "happiness": "happiness"}


def london_rows(faces_csv: Path) -> list[dict[str, str]]:
    """One manifest row (path, subject, label, gender) per photo; an unknown expression is an error."""
    faces_csv = Path(faces_csv)
    if not faces_csv.is_file():
        raise FileNotFoundError(f"no such file: {faces_csv}")
    base = faces_csv.resolve().parent
    rows = []
    with faces_csv.open(newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            expression = (row.get("expression") or "").strip().lower()
            if expression not in EXPRESSION_TO_LABEL:
                raise ValueError(f"{faces_csv}:{line}: unknown expression {expression!r}")
            if not row.get("image") or not row.get("subject_id"):
                raise ValueError(f"{faces_csv}:{line}: image and subject_id must not be empty")
            rows.append(
                {
                    "path": str(base / row["image"]),
                    "subject": row["subject_id"].strip(),
                    "label": EXPRESSION_TO_LABEL[expression],
                    "gender": (row.get("gender") or "").strip(),
                }
            )
    return rows


def write_london_manifest(faces_csv: Path, out_csv: Path) -> int:
    """Write the manifest atomically; returns the number of rows."""
    rows = london_rows(faces_csv)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "subject", "label", "gender"])
    writer.writeheader()
    writer.writerows(rows)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out_csv), buf.getvalue())
    return len(rows)
