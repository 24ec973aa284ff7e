"""Central training of g and v from the embedding cache (the paper's Sec. 4.2), and the bundle it makes.

* g (IFER) learns from single frames: every frame with a face of every training clip, labelled
  with its clip's label. v (VFER) learns from whole clips, zero pre-padded to the longest clip
  (the Masking layer hides the padding). A clip with no face frame cannot be used and is counted.
* Adam at 1e-3, halved when the dev loss has not improved for ``patience`` epochs
  (:class:`PlateauSchedule`, a pure function of the dev losses); class-weighted cross-entropy with
  sklearn's "balanced" weights (:func:`class_weights`). g for 60 epochs and v for 20 in the full
  profile.
* g's BatchNorm statistics are *recomputed exactly* on the training frames after every epoch
  (:func:`precise_bn`) before it is scored on dev. Keras' running averages (momentum 0.99) need
  hundreds of steps to settle; with a small corpus g gets a handful of steps per epoch, and its
  inference-time statistics were still those of the untrained network: on the London set g
  collapsed to one class in 1 of 4 seeds and trailed a logistic-regression probe by 10 points of
  macro-F1 (docs/reproduce.md, "g against a linear probe").
* g keeps the epoch with the best dev macro-F1 (ties: the lower dev loss); v the lowest dev loss.
* g uses AdamW with a decoupled weight decay of 0.05 (v plain Adam): on the synthetic video corpus
  (15 training people) it moved g from 2.4 points below the probe to 0.1 above (4 seeds).
* Every epoch appends one row (head, epoch, train loss, dev loss, learning rate, seconds) to the
  loss log and the logger; a rich progress bar shows the epochs.

:func:`train_central` is the one call the experiments and the fleet simulation use: corpus in,
verified bundle out, reused when the same data, models and profile were trained before.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.corpora import Corpus, Record
from training.fit import (
    FULL,
    QUICK,
    PlateauSchedule,
    TrainProfile,
    class_weights,
    fit_head,
    precise_bn,
    train_g,
)
from training.preprocess import EmbeddingCache, ensure, real_pipeline
from vfer.backbone import file_sha256
from vfer.bundle import Bundle, BundleError, write_bundle

log = logging.getLogger(__name__)

__all__ = [
    "FULL",
    "QUICK",
    "ClipData",
    "PlateauSchedule",
    "TrainProfile",
    "class_weights",
    "clip_data",
    "fit_head",
    "precise_bn",
    "train_central",
    "train_dev",
    "train_g",
    "train_heads",
]


@dataclass
class ClipData:
    """Clips of some records as embeddings (face frames only), their labels and what was dropped."""

    clips: list[np.ndarray]
    labels: np.ndarray
    records: list[Record]
    no_face: list[Record] = field(default_factory=list)

    def frames(self) -> tuple[np.ndarray, np.ndarray]:
        """Every frame as one sample for g: (N, 1280) and its clip's label."""
        if not self.clips:
            return np.zeros((0, 1280), np.float32), np.zeros(0, np.int64)
        x = np.concatenate(self.clips)
        y = np.concatenate(
            [np.full(len(c), lab) for c, lab in zip(self.clips, self.labels, strict=True)]
        )
        return x, y.astype(np.int64)


def clip_data(records: Sequence[Record], cache: EmbeddingCache, classes: Sequence[str]) -> ClipData:
    index = {c: i for i, c in enumerate(classes)}
    out = ClipData([], np.zeros(0, np.int64), [])
    labels = []
    for r in records:
        e = cache.get(r.path)
        if len(e.embeddings) == 0:
            out.no_face.append(r)
            continue
        out.clips.append(e.embeddings)
        out.records.append(r)
        labels.append(index[r.label])
    out.labels = np.asarray(labels, dtype=np.int64)
    return out


def train_dev(corpus: Corpus, seed: int) -> tuple[list[Record], list[Record]]:
    """The corpus's train and dev records; without a dev split, one train subject in five is dev."""
    train, dev = corpus.split("train"), corpus.split("dev")
    if dev:
        return train, dev
    subjects = sorted({r.subject for r in train})
    if len(subjects) < 2:
        raise ValueError(f"{corpus.name}: no dev split and fewer than 2 training subjects")
    rng = np.random.default_rng([seed, 0xDE5])
    n_dev = max(1, len(subjects) // 5)
    held = {str(s) for s in rng.permutation(subjects)[:n_dev]}
    log.info("%s has no dev split: holding out training subjects %s", corpus.name, sorted(held))
    return [r for r in train if r.subject not in held], [r for r in train if r.subject in held]


@dataclass
class TrainResult:
    ifer_weights: dict[str, np.ndarray]
    vfer_weights: dict[str, np.ndarray]
    log: list[dict[str, Any]]
    counts: dict[str, int]


def train_heads(
    train: ClipData,
    dev: ClipData,
    classes: Sequence[str],
    profile: TrainProfile,
    *,
    seed: int = 0,
    progress: bool = True,
    log_path: Path | None = None,
    g_data: tuple[ClipData, ClipData] | None = None,
) -> TrainResult:
    """Train g on frames and v on whole pre-padded clips; returns both heads' weights and the log.

    ``g_data`` (train, dev) gives g its own corpus (the paper's image corpus); by default g learns
    from the frames of v's clips.
    """
    import keras

    from vfer.heads import build_ifer, build_vfer, get_weights
    from vfer.personalize import pad_clips

    k = len(classes)
    if len(train.clips) == 0 or len(dev.clips) == 0:
        raise ValueError(
            f"need training and dev clips with faces, got {len(train.clips)} and {len(dev.clips)}"
        )
    keras.utils.set_random_seed(seed)
    rows: list[dict[str, Any]] = []
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")

    with _EpochBar(progress, profile.g_epochs + profile.v_epochs) as bar:

        def on_epoch(row: dict[str, Any]) -> None:
            rows.append(row)
            log.info(
                "%s epoch %s: train loss %.4f, dev loss %.4f, lr %.2e",
                row["head"],
                row["epoch"],
                row["train_loss"],
                row["dev_loss"],
                row["lr"],
            )
            if log_path is not None:
                with log_path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
            bar.advance(row)

        g = build_ifer(k)
        g_train, g_dev = g_data or (train, dev)
        if len(g_train.clips) == 0 or len(g_dev.clips) == 0:
            raise ValueError("g needs training and dev images or clips with faces")
        fit_head(g, "g", g_train.frames(), g_dev.frames(), profile.g_epochs, profile, on_epoch)
        longest = max(len(c) for c in train.clips + dev.clips)
        v = build_vfer(k)
        xv, xdv = pad_clips(train.clips, longest), pad_clips(dev.clips, longest)
        fit_head(v, "v", (xv, train.labels), (xdv, dev.labels), profile.v_epochs, profile, on_epoch)
    counts = {
        "train_clips": len(train.clips),
        "dev_clips": len(dev.clips),
        "train_frames": int(sum(len(c) for c in train.clips)),
        "g_train_frames": int(sum(len(c) for c in g_train.clips)),
        "no_face_clips": len(train.no_face) + len(dev.no_face),
        "padded_length": longest,
    }
    return TrainResult(get_weights(g), get_weights(v), rows, counts)


class _EpochBar:
    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self._progress: Any = None

    def __enter__(self) -> _EpochBar:
        if self.enabled:
            from rich.progress import Progress

            self._progress = Progress(transient=False)
            self._progress.start()
            self._task = self._progress.add_task("training g and v", total=self.total)
        return self

    def advance(self, row: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                advance=1,
                description=f"{row['head']} epoch {row['epoch']} dev loss {row['dev_loss']:.3f}",
            )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def fingerprint(
    corpus: Corpus, cache: EmbeddingCache, profile: TrainProfile, seed: int, dev: list[Record]
) -> str:
    """Same records (by content), labels, splits, pipeline, profile and seed: the same model."""
    h = hashlib.sha256(cache.key.encode())
    h.update(json.dumps([asdict(profile), seed, list(corpus.classes)]).encode())
    dev_ids = {id(r) for r in dev}
    for r in sorted(corpus.records, key=lambda r: (str(r.path), r.subject)):
        if r.split in ("train", "dev"):
            role = "dev" if id(r) in dev_ids else r.split
            h.update(f"{cache.hash_of(r.path)}|{r.label}|{role}\n".encode())
    return h.hexdigest()[:32]


def train_central(
    corpus: Corpus,
    cache_dir: Path,
    out_bundle: Path,
    profile: TrainProfile = FULL,
    *,
    backbone: Path,
    face_model: Path,
    seed: int = 0,
    progress: bool = True,
    head_version: str = "central-r0",
    teacher: Path | None = None,
    ifer_corpus: Corpus | None = None,
) -> Bundle:
    """Preprocess what is missing, train g and v on the corpus's train split, write a bundle.

    With ``ifer_corpus`` g learns from that corpus's train split (the paper: AffectNet images)
    and v from ``corpus``'s (CREMA-D or MSP-IMPROV clips); the manifest's notes record both.
    A bundle already at ``out_bundle`` trained from the same fingerprint is returned as it is
    (the fleet simulation trains once); any other bundle there is replaced.
    """
    cache = EmbeddingCache.for_models(cache_dir, backbone, face_model)
    train_recs, dev_recs = train_dev(corpus, seed)
    g_recs = train_dev(ifer_corpus, seed) if ifer_corpus is not None else ([], [])
    stats = ensure(
        cache,
        [r.path for r in train_recs + dev_recs + g_recs[0] + g_recs[1]],
        real_pipeline(backbone, face_model),
        progress=progress,
    )
    if stats.failed:
        log.warning("%s sources could not be decoded and are left out", len(stats.failed))
    key = fingerprint(corpus, cache, profile, seed, dev_recs)
    if ifer_corpus is not None:
        g_key = fingerprint(ifer_corpus, cache, profile, seed, g_recs[1])
        key = hashlib.sha256(f"{key}|g from {g_key}".encode()).hexdigest()[:32]
    if teacher is not None:
        key = hashlib.sha256(f"{key}|teacher {file_sha256(teacher)}".encode()).hexdigest()[:32]
    if (out_bundle / "manifest.json").is_file():
        try:
            old = Bundle.load(out_bundle)
            if old.manifest.notes.get("train_fingerprint") == key:
                log.info("reusing the central bundle at %s (same data and profile)", out_bundle)
                return old
        except BundleError as exc:
            log.warning("replacing the unusable bundle at %s: %s", out_bundle, exc)
    ok = [r for r in train_recs if cache.has(r.path)], [r for r in dev_recs if cache.has(r.path)]
    train, dev = (clip_data(rs, cache, corpus.classes) for rs in ok)
    g_data = None
    if ifer_corpus is not None:
        g_ok = [[r for r in rs if cache.has(r.path)] for rs in g_recs]
        gt, gd = (clip_data(rs, cache, corpus.classes) for rs in g_ok)
        g_data = (gt, gd)
    result = train_heads(
        train,
        dev,
        corpus.classes,
        profile,
        seed=seed,
        progress=progress,
        log_path=out_bundle.with_name(out_bundle.name + ".train_log.jsonl"),
        g_data=g_data,
    )
    notes = {
        "train_fingerprint": key,
        "corpus": corpus.name,
        "vfer_corpus": corpus.name,
        "ifer_corpus": (ifer_corpus or corpus).name,
        "seed": str(seed),
        "profile": json.dumps(asdict(profile)),
        "counts": json.dumps(result.counts),
        "final_dev_loss": json.dumps(
            {h: min(r["dev_loss"] for r in result.log if r["head"] == h) for h in ("g", "v")}
        ),
    }
    return write_bundle(
        out_bundle,
        classes=corpus.classes,
        backbone=backbone,
        ifer_weights=result.ifer_weights,
        vfer_weights=result.vfer_weights,
        head_version=head_version,
        notes=notes,
        teacher=teacher,
        overwrite=True,
    )


def with_epochs(profile: TrainProfile, g: int | None, v: int | None) -> TrainProfile:
    return replace(profile, g_epochs=g or profile.g_epochs, v_epochs=v or profile.v_epochs)
