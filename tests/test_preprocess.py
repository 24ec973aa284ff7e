"""The embedding cache: f once per frame (counted), keyed by content and backbone, resumable, no-face frames kept.

Real MediaPipe, real LiteRT backbone, real synthetic clips and a real London-set photo.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support import paths
from tests.support.bundles import cut_backbone
from training.backbone_cut import cut_at_pool
from training.preprocess import (
    ClipEmbeddings,
    Cropper,
    Embedder,
    EmbeddingCache,
    content_hash,
    ensure,
    pipeline_key,
    real_pipeline,
)
from training.synthetic.generate import SynthConfig, generate
from vfer.backbone import Backbone
from vfer.classes import EMOTIONS_4
from vfer.faces import FaceCropper
from vfer.video import read_frames


class CountingBackbone:
    """The real f, counting how often it runs."""

    def __init__(self, backbone: Backbone, fail_after: int | None = None) -> None:
        self.backbone = backbone
        self.calls = 0
        self.fail_after = fail_after

    def embed(self, crop: np.ndarray) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        return self.backbone.embed(crop)

    def close(self) -> None:
        self.backbone.close()


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not paths.FACE_MODEL.exists() or not paths.LONDON.exists():
        pytest.skip("shared models/data absent")
    root = tmp_path_factory.mktemp("pre")
    cfg = SynthConfig(
        subjects=1, clips_per_class=1, classes=EMOTIONS_4, seed=5, min_frames=8, max_frames=10
    )
    manifest = generate(cfg, root / "synth")
    clips = sorted((manifest.parent / "clips").rglob("*.mp4"))
    photo = sorted(paths.LONDON.rglob("*.jpg"))[0]
    blank = root / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 90, np.uint8))
    folder = root / "frames"
    folder.mkdir()
    frames = read_frames(clips[0]).frames
    for i, f in enumerate(frames[:3]):
        cv2.imwrite(str(folder / f"f{i + 1}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    cv2.imwrite(
        str(folder / "f10.png"), np.full((240, 320, 3), 90, np.uint8)
    )  # a frame without a face
    backbone = cut_backbone(root / "models" / "backbone.tflite")
    return {
        "clip0": clips[0],
        "clip1": clips[1],
        "clip2": clips[2],
        "photo": photo,
        "blank": blank,
        "folder": folder,
        "backbone": backbone,
        "root": root,
    }


def counting_pipeline(
    backbone: Path, counter: list[CountingBackbone], fail_after: int | None = None
):  # type: ignore[no-untyped-def]
    def make() -> tuple[Cropper, Embedder]:
        f = CountingBackbone(Backbone.from_path(backbone), fail_after)
        counter.append(f)
        return FaceCropper.from_path(paths.FACE_MODEL), f

    return make


@pytest.mark.slow
def test_f_runs_once_per_face_frame_ever(sources: dict[str, Path], tmp_path: Path) -> None:
    cache = EmbeddingCache.for_models(tmp_path, sources["backbone"], paths.FACE_MODEL)
    items = [sources[k] for k in ("clip0", "clip1", "photo", "blank", "folder")]
    calls: list[CountingBackbone] = []
    stats = ensure(cache, items, counting_pipeline(sources["backbone"], calls), progress=False)
    faces = sum(int(cache.get(s).face.sum()) for s in items)
    assert calls[0].calls == faces > 0
    assert stats.computed == 5 and stats.reused == 0 and not stats.failed
    # still images are one frame; frames without a face are recorded, not dropped
    assert (
        cache.get(sources["photo"]).frames == 1 and len(cache.get(sources["photo"]).embeddings) == 1
    )
    blank = cache.get(sources["blank"])
    assert blank.frames == 1 and blank.no_face == 1 and blank.embeddings.shape == (0, 1280)
    folder = cache.get(sources["folder"])
    assert folder.face.tolist() == [True, True, True, False]
    assert folder.embeddings.shape == (3, 1280) and folder.scores[3] == 0.0
    assert stats.no_face_frames >= 2 and stats.no_face_sources == 1
    # every later call reads the cache: the pipeline is not even loaded
    again = ensure(cache, items, counting_pipeline(sources["backbone"], calls), progress=False)
    assert len(calls) == 1 and again.reused == 5 and again.computed == 0
    # a video's frames with a face map to rows that equal f of those crops
    with (
        FaceCropper.from_path(paths.FACE_MODEL) as fc,
        Backbone.from_path(sources["backbone"]) as f,
    ):
        first = read_frames(sources["clip0"]).frames[0]
        crop = fc.crop(first)
        assert crop is not None
        np.testing.assert_allclose(
            cache.get(sources["clip0"]).embeddings[0], f.embed(crop.image), atol=1e-5
        )


@pytest.mark.slow
def test_keyed_by_content_and_backbone(sources: dict[str, Path], tmp_path: Path) -> None:
    cache = EmbeddingCache.for_models(tmp_path, sources["backbone"], paths.FACE_MODEL)
    calls: list[CountingBackbone] = []
    ensure(cache, [sources["clip0"]], counting_pipeline(sources["backbone"], calls), progress=False)
    copy = tmp_path / "renamed.mp4"
    shutil.copyfile(sources["clip0"], copy)
    fresh = EmbeddingCache.for_models(tmp_path, sources["backbone"], paths.FACE_MODEL)
    assert fresh.has(copy)  # same bytes under another name: found again
    edited = tmp_path / "edited.mp4"
    edited.write_bytes(sources["clip0"].read_bytes() + b"\0")
    assert not fresh.has(edited)
    other = tmp_path / "tf1.tflite"
    other.write_bytes(cut_at_pool(paths.BACKBONE_TF1.read_bytes()))
    assert pipeline_key(other, paths.FACE_MODEL) != cache.key
    other_cache = EmbeddingCache.for_models(tmp_path, other, paths.FACE_MODEL)
    assert not other_cache.has(sources["clip0"])
    ensure(other_cache, [sources["clip0"]], counting_pipeline(other, calls), progress=False)
    assert calls[-1].calls > 0
    assert not np.allclose(
        other_cache.get(sources["clip0"]).embeddings, cache.get(sources["clip0"]).embeddings
    )


@pytest.mark.slow
def test_resumes_after_interruption(sources: dict[str, Path], tmp_path: Path) -> None:
    cache = EmbeddingCache.for_models(tmp_path, sources["backbone"], paths.FACE_MODEL)
    items = [sources["clip0"], sources["clip1"], sources["clip2"]]
    n0 = len(read_frames(sources["clip0"]))
    calls: list[CountingBackbone] = []
    with pytest.raises(KeyboardInterrupt):
        ensure(
            cache,
            items,
            counting_pipeline(sources["backbone"], calls, fail_after=n0 + 2),
            progress=False,
        )
    assert cache.has(items[0]) and not cache.has(items[1]) and not cache.has(items[2])
    stats = ensure(cache, items, counting_pipeline(sources["backbone"], calls), progress=False)
    assert stats.reused == 1 and stats.computed == 2
    assert calls[-1].calls == sum(len(cache.get(s).embeddings) for s in items[1:])
    assert not list(cache.root.rglob("*.tmp"))  # no torn entry left behind


@pytest.mark.slow
def test_entries_are_plain_npz(sources: dict[str, Path], tmp_path: Path) -> None:
    cache = EmbeddingCache.for_models(tmp_path, sources["backbone"], paths.FACE_MODEL)
    ensure(
        cache,
        [sources["folder"]],
        real_pipeline(sources["backbone"], paths.FACE_MODEL),
        progress=False,
    )
    entry = cache.entry(sources["folder"])
    with zipfile.ZipFile(entry) as z:
        assert sorted(z.namelist()) == sorted(
            ["format.npy", "embeddings.npy", "face.npy", "scores.npy", "skipped.npy"]
        )
    with np.load(entry, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
    assert entry.parent.parent == cache.root and entry.stem == content_hash(sources["folder"])


def test_folder_hash_follows_frames(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((8, 8, 3), 10 * i, np.uint8))
    h = content_hash(folder)
    (folder / "notes.txt").write_text("not a frame")
    assert content_hash(folder) == h
    cv2.imwrite(str(folder / "1.png"), np.full((8, 8, 3), 99, np.uint8))
    assert content_hash(folder) != h


def test_corrupt_entry_is_refused(tmp_path: Path) -> None:
    good = ClipEmbeddings(
        np.ones((1, 1280), np.float32), np.array([True, False]), np.zeros(2, np.float32), 0
    )
    (tmp_path / "a.npz").write_bytes(good.to_bytes())
    assert ClipEmbeddings.from_file(tmp_path / "a.npz").no_face == 1
    bad = ClipEmbeddings(
        np.ones((2, 1280), np.float32), np.array([True, False]), np.zeros(2, np.float32), 0
    )
    (tmp_path / "b.npz").write_bytes(bad.to_bytes())
    with pytest.raises(ValueError, match="corrupt"):
        ClipEmbeddings.from_file(tmp_path / "b.npz")
