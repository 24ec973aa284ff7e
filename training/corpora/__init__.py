"""Corpus loaders: each turns a corpus folder into a :class:`Corpus` of :class:`Record` rows.

One module per corpus (its exact layout is in the module's docstring and docs/corpora.md);
:func:`load_corpus` picks one by name, as the experiment command's ``--corpus`` does.
"""

from __future__ import annotations

from pathlib import Path

from training.corpora.affectnet import load_affectnet
from training.corpora.crema_d import load_crema_d
from training.corpora.manifest import load_manifest
from training.corpora.msp_improv import load_msp_improv
from training.corpora.record import SPLITS, Corpus, Record, Split, speaker_split

CORPORA = ("crema-d", "msp-improv", "affectnet", "synthetic", "synthetic-images", "manifest")

__all__ = [
    "CORPORA",
    "SPLITS",
    "Corpus",
    "Record",
    "Split",
    "load_affectnet",
    "load_corpus",
    "load_crema_d",
    "load_manifest",
    "load_msp_improv",
    "speaker_split",
]


def load_corpus(name: str, root: str | Path, classes: tuple[str, ...], seed: int = 0) -> Corpus:
    """Load corpus ``name`` from ``root`` with the default protocol of each corpus.

    ``synthetic`` and ``manifest`` read ``root/manifest.csv`` (``root`` may also be the CSV itself).
    """
    root = Path(root)
    if name == "crema-d":
        return load_crema_d(root, classes, seed=seed)
    if name == "msp-improv":
        return load_msp_improv(root, classes, seed=seed)
    if name == "affectnet":
        return load_affectnet(root, classes, seed=seed)
    if name in ("synthetic", "synthetic-images", "manifest"):
        csv_path = root if root.suffix.lower() == ".csv" else root / "manifest.csv"
        return load_manifest(csv_path, classes, name=name)
    raise ValueError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)}")
