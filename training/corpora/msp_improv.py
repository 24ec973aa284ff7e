"""MSP-IMPROV: six dyadic sessions, one female and one male actor each (12 speakers), 4 classes.

Expected layout::

    ROOT/Evalution.txt        (the release's spelling; Evaluation.txt is accepted too,
                               directly in ROOT or in ROOT/Labels/)
    ROOT/**/MSP-IMPROV-S01A-F01-P-FM01.avi    (videos anywhere below ROOT, any of
                                               .avi .mp4 .mkv .mov, matched by file stem;
                                               e.g. ROOT/Video/session1/S01A/P/...)

File names: ``MSP-IMPROV-S<sentence:2><scenario emotion:A|H|S|N>-<speaker gender:F|M><session:2>-
<recording type: P|R|S|T>-<dyad:FM|MF><take:2>``. The speaker is the gender plus the session
(``F01`` is the female actor of session 1), so there are 12 speakers.

Label file: one block per clip whose first line is ``<file name>; <label>; A:..; V:..; D:..;
N:..`` (the file name may start ``UTD-IMPROV-`` and end in ``.avi``/``.wav``); evaluator lines that
follow are ignored. Labels A (anger), H (happiness), S (sadness), N (neutral) are kept; O (other)
and X (no agreement) are dropped and counted.

Split (the paper): speakers 6 train / 2 dev / 4 test, gender-balanced, seeded.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from training.corpora.record import Corpus, Record, check_classes, speaker_split
from vfer.classes import EMOTIONS_4

LABELS = {"A": "anger", "H": "happiness", "S": "sadness", "N": "neutral"}
NAME = re.compile(r"^(?:MSP|UTD)-IMPROV-(S\d{2}[AHSN]-([FM])(\d{2})-[A-Z]-[A-Z]{2}\d{2,3})$")
LINE = re.compile(
    r"^\s*((?:MSP|UTD)-IMPROV-[A-Za-z0-9-]+?)(?:\.[A-Za-z0-9]+)?\s*;\s*([A-Za-z])\s*(?:;|$)"
)
LABEL_FILES = ("Evalution.txt", "Evaluation.txt")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov")
DEV_SPEAKERS = 2
TEST_SPEAKERS = 4


def _label_file(root: Path) -> Path:
    for place in ("", "Labels", "labels"):
        for name in LABEL_FILES:
            p = root / place / name
            if p.is_file():
                return p
    raise FileNotFoundError(
        f"MSP-IMPROV: no Evalution.txt or Evaluation.txt in {root} or {root / 'Labels'}"
    )


def read_labels(path: Path) -> tuple[dict[str, str], Counter[str]]:
    """clip key (name after ``-IMPROV-``) -> label letter, and counts of odd lines."""
    labels: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = LINE.match(raw)
        if m is None:
            continue
        key = m.group(1).split("-IMPROV-", 1)[1]
        letter = m.group(2).upper()
        if key in labels and labels[key] != letter:
            counts["conflicting_label_lines"] += 1
        labels[key] = letter
    if not labels:
        raise ValueError(
            f"{path}: no '<file>; <label>; ...' lines found (is it MSP-IMPROV's Evalution.txt?)"
        )
    return labels, counts


def load_msp_improv(
    root: str | Path,
    classes: tuple[str, ...] = EMOTIONS_4,
    *,
    seed: int = 0,
    dev_speakers: int = DEV_SPEAKERS,
    test_speakers: int = TEST_SPEAKERS,
) -> Corpus:
    """Every labelled video under ROOT whose label is in ``classes``; speakers split 6/2/4."""
    root = Path(root)
    classes = check_classes(classes, LABELS.values(), "MSP-IMPROV")
    labels, counts = read_labels(_label_file(root))
    speakers: dict[str, str | None] = {}
    for key in labels:
        m = NAME.match(f"MSP-IMPROV-{key}")
        if m is not None:
            speakers[f"{m.group(2)}{m.group(3)}"] = "female" if m.group(2) == "F" else "male"
    split_of = speaker_split(speakers, dev_speakers, test_speakers, seed)
    records: list[Record] = []
    seen: set[str] = set()
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES):
        m = NAME.match(path.stem)
        if m is None:
            counts["unrecognised_file"] += 1
            continue
        key = m.group(1)
        if key in seen:
            counts["duplicate_video"] += 1
            continue
        seen.add(key)
        letter = labels.get(key)
        if letter is None:
            counts["missing_label"] += 1
            continue
        label = LABELS.get(letter)
        if label is None:
            counts[f"label_{letter}"] += 1
            continue
        if label not in classes:
            counts["label_not_in_classes"] += 1
            continue
        speaker = f"{m.group(2)}{m.group(3)}"
        records.append(Record(path, speaker, label, split_of[speaker], speakers[speaker]))
    counts["labels_without_video"] = len(set(labels) - seen)
    return Corpus("msp-improv", classes, records, dict(counts))
