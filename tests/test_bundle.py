"""The model bundle: hashes, K consistency, clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.bundles import random_head
from training.backbone_cut import cut_at_pool
from vfer.bundle import Bundle, BundleError, write_bundle
from vfer.heads_spec import ifer_spec, vfer_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, backbone_src: Path) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    backbone = root / "backbone.tflite"
    backbone.write_bytes(cut_at_pool(backbone_src.read_bytes()))
    classes = ("happiness", "sadness", "anger", "neutral")
    write_bundle(
        root / "b",
        classes=classes,
        backbone=backbone,
        ifer_weights=random_head(ifer_spec(4), 1),
        vfer_weights=random_head(vfer_spec(4), 2),
        head_version="test",
    )
    return root / "b"


def copy(bundle_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_written_bundle_loads_and_verifies(bundle_dir: Path) -> None:
    b = Bundle.load(bundle_dir)
    assert b.classes == ("happiness", "sadness", "anger", "neutral")
    assert b.num_classes == 4 and len(b.bundle_id) == 64
    assert b.vfer_weights()["v_out.bias"].shape == (4,)


def test_tampered_file_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    b = copy(bundle_dir, tmp_path)
    data = bytearray((b / "vfer_step.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "vfer_step.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"vfer_step\.tflite was modified or is corrupt"):
        Bundle.load(b)


def test_missing_file_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    b = copy(bundle_dir, tmp_path)
    (b / "backbone.tflite").unlink()
    with pytest.raises(BundleError, match=r"backbone\.tflite is missing"):
        Bundle.load(b)


def test_k_mismatch_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    b = copy(bundle_dir, tmp_path)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["classes"].append("surprise")
    manifest["num_classes"] = 5
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="K=5"):
        Bundle.load(b)
    manifest["num_classes"] = 4
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="num_classes 4 but 5 class names"):
        Bundle.load(b)


def test_newer_format_and_non_bundle_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    b = copy(bundle_dir, tmp_path)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["format_version"] = 99
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="newer"):
        Bundle.load(b)
    with pytest.raises(BundleError, match="not a model bundle"):
        Bundle.load(tmp_path)


def test_existing_output_is_not_overwritten_by_default(bundle_dir: Path) -> None:
    b = Bundle.load(bundle_dir)
    with pytest.raises(BundleError, match="not empty"):
        write_bundle(
            bundle_dir,
            classes=b.classes,
            backbone=bundle_dir / "backbone.tflite",
            ifer_weights=b.ifer_weights(),
            vfer_weights=b.vfer_weights(),
            head_version="x",
        )
