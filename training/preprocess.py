"""Decode -> face crop 224x224 (BlazeFace) -> backbone f -> a per-frame embedding cache on disk.

Every later step (training g and v, the experiments, the fleet simulation) reads this cache, so f
runs once per frame, ever. One entry per source file (video, still image or frame folder)::

    CACHE/<pipeline key>/<content sha256[:2]>/<content sha256>.npz

* the *pipeline key* is a hash of the backbone file, the face-detector file, the runtime that runs
  it (:data:`DETECTOR`) and the crop parameters: another f (or another detector) gets its own
  entries, never stale ones;
* the *content hash* is the sha256 of the file's bytes (of every frame file's name and bytes for a
  folder), so a renamed or copied clip is found again and an edited one is not;
* an entry holds ``face`` (one bool per decoded frame: a face was found), ``embeddings`` (one
  1280-d row per frame with a face, in order), ``scores`` (detector score per frame, 0 without a
  face) and ``skipped`` (undecodable frames). Frames without a face are recorded, never dropped
  silently; a clip with no face at all has an entry with zero embeddings;
* entries are ``.npz`` read with ``allow_pickle=False`` and written atomically, so an interrupted
  run resumes where it stopped and a reader never sees a torn entry.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from vfer.atomic import atomic_write_bytes, atomic_write_text
from vfer.backbone import file_sha256
from vfer.faces import FaceCrop
from vfer.heads_spec import EMBEDDING_DIM
from vfer.video import FrameReader, frame_files, source_kind

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
#: face-crop parameters that change what f sees (part of the pipeline key)
MIN_CONFIDENCE = 0.7
MARGIN = 0.25
#: the detector model's runtime (vfer.faces): its boxes can differ from MediaPipe's by a pixel
DETECTOR: Literal["litert", "mediapipe"] = "litert"


class Cropper(Protocol):
    def crop(self, rgb: np.ndarray) -> FaceCrop | None: ...

    def reset(self) -> None: ...


class Embedder(Protocol):
    def embed(self, crop: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ClipEmbeddings:
    """The cached result for one source: embeddings of the frames with a face, and which those were."""

    embeddings: np.ndarray  # (F, 1280) float32, F = face.sum()
    face: np.ndarray  # (T,) bool, one per decoded frame
    scores: np.ndarray  # (T,) float32 detector score, 0 where no face
    skipped: int  # undecodable frames the reader skipped

    @property
    def frames(self) -> int:
        return len(self.face)

    @property
    def no_face(self) -> int:
        return int((~self.face).sum())

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            format=np.int64(CACHE_FORMAT),
            embeddings=self.embeddings.astype(np.float32),
            face=self.face.astype(bool),
            scores=self.scores.astype(np.float32),
            skipped=np.int64(self.skipped),
        )
        return buf.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> ClipEmbeddings:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != CACHE_FORMAT:
                raise ValueError(
                    f"{path}: cache format {int(z['format'])}, expected {CACHE_FORMAT}"
                )
            out = cls(z["embeddings"], z["face"], z["scores"], int(z["skipped"]))
        if out.embeddings.shape != (int(out.face.sum()), EMBEDDING_DIM):
            raise ValueError(f"{path}: corrupt cache entry (embeddings {out.embeddings.shape})")
        return out


def content_hash(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes; for a frame folder, of each frame file's name and bytes in order."""
    p = Path(path)
    if source_kind(p) != "folder":
        return file_sha256(p)
    h = hashlib.sha256(b"frame-folder\0")
    for f in frame_files(p):
        h.update(f.name.encode() + b"\0" + bytes.fromhex(file_sha256(f)))
    return h.hexdigest()


def pipeline_key(backbone: Path, face_model: Path) -> str:
    """What makes two embeddings of the same frame equal: f, the detector, the crop parameters."""
    parts = [file_sha256(backbone), file_sha256(face_model), f"{MIN_CONFIDENCE}", f"{MARGIN}"]
    parts.append(DETECTOR)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def embed_source(path: Path, cropper: Cropper, f: Embedder) -> ClipEmbeddings:
    """Run the pipeline over one source: every decoded frame is detected, each face goes through f once."""
    cropper.reset()
    face: list[bool] = []
    scores: list[float] = []
    rows: list[np.ndarray] = []
    with FrameReader.open(path) as reader:
        for rgb in reader:
            crop = cropper.crop(rgb)
            face.append(crop is not None)
            scores.append(crop.score if crop is not None else 0.0)
            if crop is not None:
                rows.append(np.asarray(f.embed(crop.image), dtype=np.float32))
        skipped = reader.skipped
    emb = np.stack(rows) if rows else np.zeros((0, EMBEDDING_DIM), np.float32)
    return ClipEmbeddings(emb, np.asarray(face, bool), np.asarray(scores, np.float32), skipped)


class EmbeddingCache:
    """The on-disk cache for one pipeline (backbone + detector). ``get`` reads, ``ensure`` fills."""

    def __init__(self, root: str | os.PathLike[str], key: str) -> None:
        self.root = Path(root) / key
        self.key = key
        self._hashes: dict[Path, str] = {}

    @classmethod
    def for_models(
        cls, root: str | os.PathLike[str], backbone: Path, face_model: Path
    ) -> EmbeddingCache:
        cache = cls(root, pipeline_key(Path(backbone), Path(face_model)))
        info = {
            "format": CACHE_FORMAT,
            "backbone_sha256": file_sha256(backbone),
            "face_model_sha256": file_sha256(face_model),
            "min_confidence": MIN_CONFIDENCE,
            "margin": MARGIN,
        }
        if not (cache.root / "pipeline.json").is_file():
            atomic_write_text(cache.root / "pipeline.json", json.dumps(info, indent=1) + "\n")
        return cache

    def hash_of(self, source: Path) -> str:
        if source not in self._hashes:
            self._hashes[source] = content_hash(source)
        return self._hashes[source]

    def entry(self, source: Path) -> Path:
        h = self.hash_of(source)
        return self.root / h[:2] / f"{h}.npz"

    def has(self, source: Path) -> bool:
        return self.entry(source).is_file()

    def get(self, source: Path) -> ClipEmbeddings:
        entry = self.entry(source)
        if not entry.is_file():
            raise KeyError(f"{source} is not in the embedding cache {self.root}; run preprocess")
        return ClipEmbeddings.from_file(entry)

    def put(self, source: Path, value: ClipEmbeddings) -> None:
        atomic_write_bytes(self.entry(source), value.to_bytes())


@dataclass(frozen=True)
class PreprocessStats:
    sources: int
    computed: int  # sources run through f in this call
    reused: int  # sources already in the cache
    frames: int  # decoded frames over all sources
    no_face_frames: int
    no_face_sources: int  # sources where no frame had a face
    failed: list[str]  # sources that could not be decoded: "path: reason"

    def summary(self) -> dict[str, object]:
        return dict(self.__dict__)


def ensure(
    cache: EmbeddingCache,
    sources: Sequence[Path],
    make_pipeline: Callable[[], tuple[Cropper, Embedder]],
    *,
    progress: bool = True,
    description: str = "embedding frames",
) -> PreprocessStats:
    """Fill the cache for ``sources``; the models are loaded only when something is missing.

    An undecodable source is recorded in ``failed`` (and logged) and the run goes on.
    """
    unique = list(dict.fromkeys(Path(s) for s in sources))
    missing = [s for s in unique if not cache.has(s)]
    failed: list[str] = []
    if missing:
        cropper, f = make_pipeline()
        try:
            for source in _progress(missing, description, progress):
                try:
                    cache.put(source, embed_source(source, cropper, f))
                except (ValueError, OSError) as exc:
                    failed.append(f"{source}: {exc}")
                    log.warning("cannot preprocess %s: %s", source, exc)
        finally:
            for closable in (cropper, f):
                close = getattr(closable, "close", None)
                if close is not None:
                    close()
    frames = no_face = no_face_sources = 0
    for source in unique:
        if not cache.has(source):
            continue
        e = cache.get(source)
        frames += e.frames
        no_face += e.no_face
        no_face_sources += int(len(e.embeddings) == 0)
    return PreprocessStats(
        sources=len(unique),
        computed=len(missing) - len(failed),
        reused=len(unique) - len(missing),
        frames=frames,
        no_face_frames=no_face,
        no_face_sources=no_face_sources,
        failed=failed,
    )


def _progress(items: Sequence[Path], description: str, enabled: bool) -> Iterable[Path]:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=description, transient=False)


def real_pipeline(backbone: Path, face_model: Path) -> Callable[[], tuple[Cropper, Embedder]]:
    """A factory for the real face cropper and LiteRT f (loaded lazily)."""

    def make() -> tuple[Cropper, Embedder]:
        from vfer.backbone import Backbone
        from vfer.faces import FaceCropper

        return (
            FaceCropper.from_path(
                face_model, min_confidence=MIN_CONFIDENCE, margin=MARGIN, detector=DETECTOR
            ),
            Backbone.from_path(backbone),
        )

    return make
