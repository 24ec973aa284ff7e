"""AffectNet (manually annotated part): still images with a face box and an expression code.

Layout (as distributed)::

    ROOT/Manually_Annotated_file_lists/training.csv     (or ROOT/training.csv)
    ROOT/Manually_Annotated_file_lists/validation.csv   (or ROOT/validation.csv)
    ROOT/Manually_Annotated_Images/<subDirectory_filePath>   (or ROOT/<subDirectory_filePath>)

CSV columns: subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
expression, valence, arousal. ``validation.csv`` ships without a header in some copies; both are
read. Expression codes: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger,
7 contempt, 8 none, 9 uncertain, 10 no face. Only the codes of the chosen classes are kept.

Protocol (Sec. 4.1 of the paper): from training.csv, each class is randomly down-sampled to at
most ``max_per_class`` images (24,882), then split 80/20 into train/dev per class; the official
validation set is the test set. AffectNet has no identities: each image is its own subject.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from training.corpora.record import Corpus, Record, Split, check_classes
from vfer.classes import EMOTIONS_6

CODES: dict[int, str] = {
    0: "neutral",
    1: "happiness",
    2: "sadness",
    3: "surprise",
    4: "fear",
    5: "disgust",
    6: "anger",
    7: "contempt",
    8: "none",
    9: "uncertain",
    10: "no_face",
}
COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
MAX_PER_CLASS = 24_882
LIST_DIRS = ("Manually_Annotated_file_lists", "")
IMAGE_DIRS = ("Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images", "")


def _find(root: Path, name: str) -> Path:
    for place in LIST_DIRS:
        p = root / place / name if place else root / name
        if p.is_file():
            return p
    raise FileNotFoundError(f"AffectNet: {name} not found in {root} or {root / LIST_DIRS[0]}")


def _image_root(root: Path) -> Path:
    for place in IMAGE_DIRS:
        if place and (root / place).is_dir():
            return root / place
    return root


def read_list(path: Path) -> list[tuple[str, tuple[int, int, int, int], int]]:
    """(relative image path, face box, expression code) per row, header or not."""
    out = []
    with path.open(newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or (line == 1 and row[0].strip() == COLUMNS[0]):
                continue
            if len(row) < 7:
                raise ValueError(f"{path}:{line}: expected {len(COLUMNS)} columns, got {len(row)}")
            try:
                box = (
                    int(float(row[1])),
                    int(float(row[2])),
                    int(float(row[3])),
                    int(float(row[4])),
                )
                code = int(float(row[6]))
            except ValueError:
                raise ValueError(
                    f"{path}:{line}: face box and expression must be numbers"
                ) from None
            out.append((row[0].strip(), box, code))
    return out


def load_affectnet(
    root: str | Path,
    classes: tuple[str, ...] = EMOTIONS_6,
    *,
    seed: int = 0,
    max_per_class: int = MAX_PER_CLASS,
    dev_fraction: float = 0.2,
    check_files: bool = True,
) -> Corpus:
    """Train/dev from training.csv (down-sampled, stratified 80/20), test = validation.csv."""
    root = Path(root)
    classes = check_classes(classes, CODES.values(), "AffectNet")
    if max_per_class < 1 or not 0.0 <= dev_fraction < 1.0:
        raise ValueError(
            f"need max_per_class >= 1 and 0 <= dev_fraction < 1, got {max_per_class}, {dev_fraction}"
        )
    images = _image_root(root)
    counts: Counter[str] = Counter()

    def usable(rows: list[tuple[str, tuple[int, int, int, int], int]]) -> dict[str, list[Record]]:
        by_class: dict[str, list[Record]] = {c: [] for c in classes}
        for rel, box, code in rows:
            label = CODES.get(code)
            if label is None:
                counts["unknown_code"] += 1
                continue
            if label not in classes:
                counts[f"code_{code}_{label}"] += 1
                continue
            path = images / rel
            if check_files and not path.is_file():
                counts["missing_file"] += 1
                continue
            by_class[label].append(Record(path, rel, label, None, None, box))
        return by_class

    rng = np.random.default_rng(seed)
    records: list[Record] = []
    for label, items in usable(read_list(_find(root, "training.csv"))).items():
        if len(items) > max_per_class:
            counts[f"downsampled_{label}"] = len(items) - max_per_class
            keep = np.sort(rng.choice(len(items), max_per_class, replace=False))
            items = [items[i] for i in keep]
        order = rng.permutation(len(items))
        n_dev = round(dev_fraction * len(items))
        split_of: list[Split] = ["train"] * len(items)
        for i in order[:n_dev]:
            split_of[int(i)] = "dev"
        records += [_with_split(r, s) for r, s in zip(items, split_of, strict=True)]
    for items in usable(read_list(_find(root, "validation.csv"))).values():
        records += [_with_split(r, "test") for r in items]
    return Corpus("affectnet", classes, records, dict(counts))


def _with_split(r: Record, split: Split) -> Record:
    return Record(r.path, r.subject, r.label, split, r.gender, r.box)
