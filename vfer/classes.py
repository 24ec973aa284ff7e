"""Emotion class sets, the label spellings manifests use, and the parser the CLIs share."""

from __future__ import annotations

import re

#: CREMA-D's six categories, the paper's 6-class setting (alphabetical, as CREMA-D lists them).
EMOTIONS_6: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
#: The four classes CREMA-D, MSP-IMPROV and AffectNet share (the paper's 4-class setting).
EMOTIONS_4: tuple[str, ...] = ("happiness", "sadness", "anger", "neutral")

#: Spellings corpora and manifests use for the class names (every manifest reader maps them).
LABEL_SYNONYMS: dict[str, str] = {
    "angry": "anger",
    "happy": "happiness",
    "joy": "happiness",
    "smiling": "happiness",
    "sad": "sadness",
    "disgusted": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "surprised": "surprise",
}

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def normalize_label(text: str) -> str:
    """A manifest's label as a class name: trimmed, lower case, synonyms mapped.

    >>> normalize_label(" Happy ")
    'happiness'
    """
    name = text.strip().lower()
    return LABEL_SYNONYMS.get(name, name)


def parse_classes(spec: str) -> tuple[str, ...]:
    """Parse ``"6"``, ``"4"`` or a comma-separated list of class names, in order.

    >>> parse_classes("4")
    ('happiness', 'sadness', 'anger', 'neutral')
    """
    spec = spec.strip()
    if spec == "6":
        return EMOTIONS_6
    if spec == "4":
        return EMOTIONS_4
    names = tuple(part.strip().lower() for part in spec.split(",") if part.strip())
    return validate_classes(names)


def validate_classes(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Check a class list: at least two, unique, lower-case identifiers."""
    names = tuple(names)
    if len(names) < 2:
        raise ValueError(f"need at least 2 classes, got {list(names)!r} (use 4, 6 or a,b,c)")
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise ValueError(f"class names must be lower-case identifiers, got {bad!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {list(names)!r}")
    return names
