"""What every corpus loader yields: :class:`Record` rows in a :class:`Corpus`, and the shared split rule."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from vfer.classes import validate_classes

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
GENDERS = ("female", "male")


def normalize_gender(text: str | None) -> str | None:
    """``Female``/``F``/``woman`` -> ``female``; ``Male``/``M``/``man`` -> ``male``; else None."""
    if text is None:
        return None
    t = text.strip().lower()
    if t in ("f", "female", "woman", "w"):
        return "female"
    if t in ("m", "male", "man"):
        return "male"
    return None


@dataclass(frozen=True)
class Record:
    """One clip (or image): where it is, whose it is, its class name, and its split."""

    path: Path  # a video file, a still image, or a folder of frames
    subject: str  # actor / speaker / person id, unique within the corpus
    label: str  # class name (vfer.classes)
    split: Split | None = None
    gender: str | None = None  # "female", "male" or None
    box: tuple[int, int, int, int] | None = None  # face box (x, y, w, h) where the corpus gives one


@dataclass(frozen=True)
class Corpus:
    """A loaded corpus: records, the class list, and counts of what was dropped or resolved and why."""

    name: str
    classes: tuple[str, ...]
    records: list[Record]
    counts: dict[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def split(self, name: Split) -> list[Record]:
        return [r for r in self.records if r.split == name]

    def subjects(self, split: Split | None = None) -> list[str]:
        return sorted({r.subject for r in self.records if split is None or r.split == split})

    def class_counts(self, split: Split | None = None) -> dict[str, int]:
        c = Counter(r.label for r in self.records if split is None or r.split == split)
        return {k: c.get(k, 0) for k in self.classes}

    def summary(self) -> dict[str, object]:
        """Sizes per split, subjects per split, and the counts: for logs and reports."""
        return {
            "corpus": self.name,
            "classes": list(self.classes),
            "records": {s: len(self.split(s)) for s in SPLITS} | {"all": len(self.records)},
            "subjects": {s: len(self.subjects(s)) for s in SPLITS},
            "per_class": self.class_counts(),
            "counts": dict(sorted(self.counts.items())),
        }


def check_classes(classes: Iterable[str], known: Iterable[str], corpus: str) -> tuple[str, ...]:
    out = validate_classes(tuple(classes))
    unknown = [c for c in out if c not in set(known)]
    if unknown:
        raise ValueError(f"{corpus} has no class {unknown}; it has {sorted(set(known))}")
    return out


def speaker_split(
    gender_of: Mapping[str, str | None], dev: int, test: int, seed: int
) -> dict[str, Split]:
    """Speaker-independent, gender-balanced split: ``dev`` and ``test`` speakers, the rest train.

    Each of test and dev takes half its speakers from each gender; an odd one comes from the
    gender with more speakers left. Speakers of unknown gender always train. The same inputs
    and seed give the same split.
    """
    if dev < 0 or test < 0:
        raise ValueError(f"dev and test speaker counts must be >= 0, got {dev}, {test}")
    rng = np.random.default_rng(seed)
    pools = {
        g: [str(s) for s in rng.permutation(sorted(s for s, x in gender_of.items() if x == g))]
        for g in GENDERS
    }
    out: dict[str, Split] = dict.fromkeys(gender_of, "train")
    for split, n in (("test", test), ("dev", dev)):
        take = {g: n // 2 for g in GENDERS}
        if n % 2:
            extra = max(GENDERS, key=lambda g: (len(pools[g]) - take[g], g))
            take[extra] += 1
        for g in GENDERS:
            if take[g] > len(pools[g]):
                have = {x: len(p) for x, p in pools.items()}
                raise ValueError(
                    f"cannot take {n} {split} speakers gender-balanced: {have} left "
                    f"(of {len(gender_of)} speakers); ask for fewer dev/test speakers"
                )
            for s in pools[g][: take[g]]:
                out[s] = split  # type: ignore[assignment]
            pools[g] = pools[g][take[g] :]
    if len(out) - dev - test < 1:
        raise ValueError(
            f"no speakers left to train on ({len(out)} speakers, {dev} dev, {test} test)"
        )
    return out
