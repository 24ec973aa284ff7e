"""The model bundle: one folder holding everything a node needs to run and personalize.

::

    bundle/
      manifest.json          format version, classes in order, K, sha256 of every file,
                             head version, federation round, created-at
      backbone.tflite        f (uint8 224x224 RGB -> 1280 float32)
      ifer_head.tflite       g (signature: embedding -> probs)
      vfer_step.tflite       v's streaming step (embedding, h, c -> probs, h_out, c_out)
      vfer_head.safetensors  v's weights, all of them, for on-device fine-tuning
      ifer_head.safetensors  g's weights
      teacher.tflite         optional: an external real-face FER model, mapped onto the
      (or teacher.onnx)      bundle's classes; its sha256 is in ``files`` like the rest and
                             ``teacher`` says which kind it is (vfer.teachers: recognised by its
                             shapes when the bundle was written, checked again on every load)
                             and which class each of its outputs is

Loading verifies every hash and that K agrees across the manifest, the class list, both heads and
v's weights; any mismatch is a :class:`BundleError` that says which file and what differs.
A bundle is written into a temporary sibling folder and renamed into place, so a reader sees
either no bundle or a whole one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vfer import weights as wio
from vfer.atomic import fsync_dir, fsync_file, replace_dir
from vfer.backbone import file_sha256
from vfer.classes import validate_classes
from vfer.heads_spec import ifer_spec, vfer_spec

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BACKBONE = "backbone.tflite"
IFER_TFLITE = "ifer_head.tflite"
VFER_STEP = "vfer_step.tflite"
VFER_WEIGHTS = "vfer_head.safetensors"
IFER_WEIGHTS = "ifer_head.safetensors"
TEACHER = "teacher.tflite"
TEACHER_ONNX = "teacher.onnx"
TEACHER_FILES = (TEACHER, TEACHER_ONNX)  # vfer.teachers.KINDS' file names
REQUIRED = (BACKBONE, IFER_TFLITE, VFER_STEP, VFER_WEIGHTS, IFER_WEIGHTS)
#: the files a derived bundle (a new v) takes over unchanged from its parent
CARRIED = (BACKBONE, IFER_TFLITE, IFER_WEIGHTS, *TEACHER_FILES)


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and what is wrong."""


class TeacherInfo(BaseModel):
    """What the bundle's external teacher is: its output classes and where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Literal["teacher.tflite", "teacher.onnx"] = Field(
        "teacher.tflite", description="file name in the bundle"
    )
    kind: Literal["fer2013", "mobilefacenet"] | None = Field(
        None,
        description="which model it is (vfer.teachers.KINDS), recognised by its input and "
        "output shapes; absent in bundles written before kinds (then read as today's TFLite)",
    )
    source_classes: list[str] = Field(
        min_length=2, max_length=64, description="the model's outputs, in its order"
    )
    center_fraction: float = Field(
        1.0, ge=0.1, le=1.0, description="middle part of the 224x224 face crop it sees"
    )
    origin: str = Field("", max_length=500, description="where the file came from")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = Field(FORMAT_VERSION, description="bundle layout version")
    classes: list[str] = Field(description="class names, in the order of the heads' outputs")
    num_classes: int = Field(ge=2, description="K")
    files: dict[str, str] = Field(description="file name -> sha256 hex")
    head_version: str = Field(
        description="version of the heads, e.g. central-r2 or local-20261126T0300"
    )
    federation_round: int = Field(0, ge=0, description="central round the heads come from")
    personalized: bool = Field(False, description="v was fine-tuned on this node")
    parent: str | None = Field(None, description="head_version this one was derived from")
    created_at: str = Field(description="ISO 8601 UTC")
    notes: dict[str, str] = Field(default_factory=dict, description="free-form provenance")
    teacher: TeacherInfo | None = Field(None, description="the external teacher, when present")


class Bundle:
    """A verified bundle on disk. Build it with :meth:`load`."""

    def __init__(self, path: Path, manifest: Manifest, bundle_id: str) -> None:
        self.path = path
        self.manifest = manifest
        #: sha256 of manifest.json, which holds the hash of every file: one id for the whole bundle
        self.bundle_id = bundle_id

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest.classes)

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    def file(self, name: str) -> Path:
        return self.path / name

    def vfer_weights(self) -> dict[str, np.ndarray]:
        return wio.load(self.file(VFER_WEIGHTS))

    def ifer_weights(self) -> dict[str, np.ndarray]:
        return wio.load(self.file(IFER_WEIGHTS))

    @property
    def has_teacher(self) -> bool:
        return self.manifest.teacher is not None

    def teacher(self, num_threads: int = 1) -> Any:
        """The external teacher over this bundle's classes (a :class:`vfer.teachers.TeacherModel`:
        ``predict_face(frame, face)``; the FER2013 one is a :class:`vfer.teacher.Teacher`)."""
        from vfer.teachers import open_teacher

        info = self.manifest.teacher
        if info is None:
            raise BundleError(f"{self.path}: this bundle has no teacher")
        return open_teacher(
            self.file(info.file),
            self.classes,
            kind=info.kind,
            source_classes=info.source_classes,
            center_fraction=info.center_fraction,
            num_threads=num_threads,
        )

    def carried_files(self) -> dict[str, bytes | Path]:
        """The files a bundle derived from this one keeps as they are (f, g, the teacher)."""
        return {name: self.file(name) for name in CARRIED if name in self.manifest.files}

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify: bool = True) -> Bundle:
        root = Path(path)
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"{root}: not a model bundle (no {MANIFEST})")
        raw = mpath.read_bytes()
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValidationError as exc:
            raise BundleError(
                f"{mpath}: invalid manifest: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}"
            ) from None
        if manifest.format_version > FORMAT_VERSION:
            raise BundleError(
                f"{root}: bundle format {manifest.format_version} is newer than this software "
                f"understands ({FORMAT_VERSION}); upgrade fedvfer"
            )
        bundle = cls(root, manifest, _sha256_bytes(raw))
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        m = self.manifest
        try:
            validate_classes(m.classes)
        except ValueError as exc:
            raise BundleError(f"{self.path}: {exc}") from None
        if m.num_classes != len(m.classes):
            raise BundleError(
                f"{self.path}: num_classes {m.num_classes} but {len(m.classes)} class names"
            )
        for name in REQUIRED:
            if name not in m.files:
                raise BundleError(f"{self.path}: manifest lists no hash for {name}")
        if m.teacher is not None and m.teacher.file not in m.files:
            raise BundleError(
                f"{self.path}: manifest lists no hash for the teacher {m.teacher.file}"
            )
        for name, expected in m.files.items():
            p = self.file(name)
            if not p.is_file():
                raise BundleError(f"{self.path}: {name} is missing")
            actual = file_sha256(p)
            if actual != expected:
                raise BundleError(
                    f"{self.path}: {name} was modified or is corrupt (sha256 {actual[:12]}..., manifest says {expected[:12]}...)"
                )
        self._check_k()

    def _check_k(self) -> None:
        from vfer.runtime import IferHead, VferStep

        k = self.manifest.num_classes
        try:
            wio.check(self.vfer_weights(), vfer_spec(k))
            wio.check(self.ifer_weights(), ifer_spec(k))
        except wio.WeightsError as exc:
            raise BundleError(f"{self.path}: head weights do not match K={k}: {exc}") from None
        with (
            IferHead.from_path(self.file(IFER_TFLITE)) as g,
            VferStep.from_path(self.file(VFER_STEP)) as v,
        ):
            for name, got in ((IFER_TFLITE, g.num_classes), (VFER_STEP, v.num_classes)):
                if got != k:
                    raise BundleError(
                        f"{self.path}: {name} outputs {got} classes, manifest says {k}"
                    )
        if self.manifest.teacher is not None:
            try:
                self.teacher().close()
            except (ValueError, OSError) as exc:
                raise BundleError(f"{self.path}: unusable teacher: {exc}") from None


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_bundle(
    out: str | os.PathLike[str],
    *,
    classes: tuple[str, ...] | list[str],
    backbone: str | os.PathLike[str],
    ifer_weights: Mapping[str, np.ndarray],
    vfer_weights: Mapping[str, np.ndarray],
    head_version: str,
    federation_round: int = 0,
    personalized: bool = False,
    parent: str | None = None,
    notes: dict[str, str] | None = None,
    ifer_tflite: bytes | str | os.PathLike[str] | None = None,
    teacher: str | os.PathLike[str] | None = None,
    teacher_info: TeacherInfo | None = None,
    overwrite: bool = False,
) -> Bundle:
    """Export both heads and write a complete bundle at ``out`` atomically.

    ``ifer_tflite`` may hand over an already exported g (bytes or a file) to skip re-exporting it.
    ``teacher`` adds an external FER model (checked against the classes first, see
    :func:`check_teacher`).
    """
    from vfer import export

    classes = validate_classes(classes)
    k = len(classes)
    wio.check(ifer_weights, ifer_spec(k))
    wio.check(vfer_weights, vfer_spec(k))
    if isinstance(ifer_tflite, bytes):
        g_bytes = ifer_tflite
    elif ifer_tflite is not None:
        g_bytes = Path(ifer_tflite).read_bytes()
    else:
        g_bytes = export.ifer_tflite(ifer_weights)
    files: dict[str, bytes | Path] = {
        BACKBONE: Path(backbone),
        IFER_TFLITE: g_bytes,
        VFER_STEP: export.vfer_step_tflite(vfer_weights),
        VFER_WEIGHTS: wio.to_bytes(vfer_weights),
        IFER_WEIGHTS: wio.to_bytes(ifer_weights),
    }
    if teacher is not None:
        teacher_info = check_teacher(teacher, classes, teacher_info)
        files[teacher_info.file] = Path(teacher)
    return write_files(
        out,
        files,
        classes=classes,
        head_version=head_version,
        federation_round=federation_round,
        personalized=personalized,
        parent=parent,
        notes=notes or {},
        teacher=teacher_info if teacher is not None else None,
        overwrite=overwrite,
    )


def check_teacher(
    path: str | os.PathLike[str], classes: tuple[str, ...], info: TeacherInfo | None = None
) -> TeacherInfo:
    """Recognise the teacher's kind by its shapes and load it once against ``classes``.

    Returns what the manifest records (kind, file name, output classes); a missing file, a model
    of no known kind or one that cannot label ``classes`` is a BundleError saying what was
    expected.
    """
    from vfer.teachers import TeacherFileError, identify, open_teacher

    try:
        kind = identify(path)
    except TeacherFileError as exc:
        raise BundleError(f"teacher {exc}") from None
    if info is None:
        info = TeacherInfo(source_classes=list(kind.source_classes), origin=Path(path).name)
    info = info.model_copy(update={"kind": kind.name, "file": kind.file})
    try:
        open_teacher(
            path,
            classes,
            kind=info.kind,
            source_classes=info.source_classes,
            center_fraction=info.center_fraction,
        ).close()
    except (ValueError, OSError) as exc:
        raise BundleError(f"teacher {path}: {exc}") from None
    return info


def write_files(
    out: str | os.PathLike[str],
    files: Mapping[str, bytes | Path],
    *,
    classes: tuple[str, ...],
    head_version: str,
    federation_round: int,
    personalized: bool,
    parent: str | None,
    notes: dict[str, str],
    teacher: TeacherInfo | None = None,
    overwrite: bool = False,
) -> Bundle:
    """Write ``files`` (bytes, or paths to copy) plus a manifest into a new folder, atomically.

    ``teacher`` describes ``files[teacher.file]``; a teacher file without it is refused.
    """
    _check_teacher_pair(files, teacher)
    target = Path(out)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise BundleError(f"{target} exists and is not empty (choose another --out or remove it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        hashes = {name: _put(tmp / name, content) for name, content in files.items()}
        manifest = Manifest(
            classes=list(classes),
            num_classes=len(classes),
            files=hashes,
            head_version=head_version,
            federation_round=federation_round,
            personalized=personalized,
            parent=parent,
            created_at=now_iso(),
            notes=notes,
            teacher=teacher,
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=2) + "\n")
        fsync_file(tmp / MANIFEST)
        fsync_dir(tmp)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle.load(target)


def _check_teacher_pair(files: Mapping[str, bytes | Path], teacher: TeacherInfo | None) -> None:
    present = [name for name in TEACHER_FILES if name in files]
    if present != ([teacher.file] if teacher is not None else []):
        raise BundleError(
            f"a teacher file ({', '.join(present) or 'none'}) and its teacher description "
            f"({teacher.file if teacher is not None else 'none'}) go together"
        )


def _put(dest: Path, content: bytes | Path) -> str:
    """Write (bytes) or copy (a path) one file, fsynced; its sha256."""
    if isinstance(content, bytes):
        dest.write_bytes(content)
    else:
        if not Path(content).is_file():
            raise BundleError(f"{content}: no such file")
        shutil.copyfile(content, dest)
    fsync_file(dest)
    return file_sha256(dest)
