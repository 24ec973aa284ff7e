"""CREMA-D: 7,442 clips of 91 actors, labelled by the plurality of the crowd's audio-visual votes.

Layout (the official repository, https://github.com/CheyneyComputerScience/CREMA-D)::

    ROOT/VideoFlash/1001_DFA_ANG_XX.flv        (or ROOT/VideoMP4/*.mp4)
    ROOT/processedResults/tabulatedVotes.csv
    ROOT/VideoDemographics.csv

(``tabulatedVotes.csv`` and ``VideoDemographics.csv`` are also found directly in ROOT or in
ROOT/labels/.) File names are ``ActorID_Sentence_Emotion_Level``. ``tabulatedVotes.csv`` has three
rows per clip, one per rating modality; the unnamed first column is ``modality * 100000 +
clip number`` with modality 1 = voice, 2 = face, 3 = audio-visual (compare summaryTable.csv:
its ``MultiModalVote`` equals the plurality of the 3xxxxx rows).

Label rule (the paper's): the emotion with the most audio-visual votes (columns A D F H N S).
Ties between emotions are dropped (``ties="drop"``) or resolved to the acted emotion when it is
one of the tied ones (``ties="intended"``); clips without votes are dropped. Everything dropped or
resolved is counted in ``Corpus.counts``.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from training.corpora.record import (
    Corpus,
    Record,
    Split,
    check_classes,
    normalize_gender,
    speaker_split,
)
from vfer.classes import EMOTIONS_6

#: Vote columns and file-name emotion codes -> class names.
VOTE_CODES = {
    "A": "anger",
    "D": "disgust",
    "F": "fear",
    "H": "happiness",
    "N": "neutral",
    "S": "sadness",
}
FILE_CODES = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happiness",
    "NEU": "neutral",
    "SAD": "sadness",
}
MODALITIES = {"voice": 1, "face": 2, "multimodal": 3}
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
VIDEO_DIRS = (("VideoFlash", ".flv"), ("VideoMP4", ".mp4"))
#: Defaults: 4 development and 31 test actors, the rest (56 of 91) train. See docs/corpora.md.
DEV_ACTORS = 4
TEST_ACTORS = 31

Ties = Literal["drop", "intended"]


@dataclass(frozen=True)
class Vote:
    """One clip's label by the plurality rule, or why there is none."""

    label: str | None
    tied: tuple[str, ...] = ()  # the emotions sharing the top count, when more than one
    total: int = 0


def plurality(counts: dict[str, int], intended: str | None, ties: Ties) -> Vote:
    """The plurality label of one clip's vote counts (class name -> votes).

    >>> plurality({"anger": 5, "fear": 2}, "fear", "drop").label
    'anger'
    >>> plurality({"anger": 3, "fear": 3}, "fear", "intended").label
    'fear'
    """
    total = sum(counts.values())
    if total <= 0:
        return Vote(None, (), 0)
    top = max(counts.values())
    winners = tuple(sorted(k for k, v in counts.items() if v == top))
    if len(winners) == 1:
        return Vote(winners[0], (), total)
    if ties == "intended" and intended in winners:
        return Vote(intended, winners, total)
    return Vote(None, winners, total)


def find_file(root: Path, name: str, places: tuple[str, ...]) -> Path:
    for place in places:
        p = root / place / name if place else root / name
        if p.is_file():
            return p
    tried = ", ".join(str(root / p / name if p else root / name) for p in places)
    raise FileNotFoundError(f"CREMA-D: {name} not found (tried {tried})")


def read_votes(path: Path, modality: str = "multimodal") -> dict[str, dict[str, int]]:
    """clip name -> {class name: votes} for one rating modality of ``tabulatedVotes.csv``."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {sorted(MODALITIES)}, got {modality!r}")
    want = MODALITIES[modality]
    out: dict[str, dict[str, int]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        need = ["fileName", *VOTE_CODES]
        missing = [c for c in need if c not in header]
        if missing or not header or header[0] != "":
            raise ValueError(
                f"{path}: not a CREMA-D tabulatedVotes.csv (missing columns {missing})"
            )
        col = {c: header.index(c) for c in need}
        for line, row in enumerate(reader, start=2):
            try:
                if int(row[0]) // 100000 != want:
                    continue
                counts = {VOTE_CODES[c]: int(float(row[col[c]] or 0)) for c in VOTE_CODES}
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{line}: cannot read votes ({exc})") from None
            out[row[col["fileName"]]] = counts
    return out


def read_demographics(path: Path) -> dict[str, str | None]:
    """ActorID -> "female" / "male" / None from ``VideoDemographics.csv``."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "ActorID" not in rows[0] or "Sex" not in rows[0]:
        raise ValueError(f"{path}: not a CREMA-D VideoDemographics.csv (needs ActorID and Sex)")
    return {row["ActorID"].strip(): normalize_gender(row["Sex"]) for row in rows}


def video_dir(root: Path) -> tuple[Path, str]:
    for name, suffix in VIDEO_DIRS:
        if (root / name).is_dir():
            return root / name, suffix
    raise FileNotFoundError(f"CREMA-D: no VideoFlash/ or VideoMP4/ folder in {root}")


def load_crema_d(
    root: str | Path,
    classes: tuple[str, ...] = EMOTIONS_6,
    *,
    seed: int = 0,
    dev_actors: int = DEV_ACTORS,
    test_actors: int = TEST_ACTORS,
    ties: Ties = "drop",
    modality: str = "multimodal",
) -> Corpus:
    """Every clip under ROOT's video folder that has a plurality label in ``classes``.

    Actors are split over all of ``VideoDemographics.csv`` (so a partial download keeps the same
    split), ``dev_actors`` and ``test_actors`` gender-balanced, the rest train.
    """
    root = Path(root)
    classes = check_classes(classes, FILE_CODES.values(), "CREMA-D")
    if ties not in ("drop", "intended"):
        raise ValueError(f"ties must be 'drop' or 'intended', got {ties!r}")
    votes = read_votes(
        find_file(root, "tabulatedVotes.csv", ("processedResults", "", "labels")), modality
    )
    genders = read_demographics(
        find_file(root, "VideoDemographics.csv", ("", "processedResults", "labels"))
    )
    split_of = speaker_split(genders, dev_actors, test_actors, seed)
    folder, suffix = video_dir(root)
    counts: Counter[str] = Counter()
    records: list[Record] = []
    for path in sorted(folder.iterdir()):
        m = NAME.match(path.stem)
        if path.suffix.lower() != suffix or m is None or m.group(3) not in FILE_CODES:
            counts["unrecognised_file"] += 1
            continue
        actor, intended = m.group(1), FILE_CODES[m.group(3)]
        if path.stem not in votes:
            counts["missing_votes"] += 1
            continue
        vote = plurality(votes[path.stem], intended, ties)
        if vote.total == 0:
            counts["no_votes"] += 1
            continue
        if vote.tied:
            counts["tie"] += 1
            if vote.label is None:
                counts["tie_dropped"] += 1
                continue
            counts["tie_resolved_to_intended"] += 1
        assert vote.label is not None
        if vote.label != intended:
            counts["label_differs_from_intended"] += 1
        if vote.label not in classes:
            counts["label_not_in_classes"] += 1
            continue
        if actor not in genders:
            counts["actor_not_in_demographics"] += 1
        split: Split = split_of.get(actor, "train")
        records.append(Record(path, actor, vote.label, split, genders.get(actor)))
    counts["votes_without_video"] = len(set(votes) - {p.stem for p in folder.iterdir()})
    return Corpus("crema-d", classes, records, dict(counts))
