"""The cut backbone f: its output is exactly the original model's global-pool tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support import paths
from training.backbone_cut import cut_at_pool, find_pool_tensor
from vfer.backbone import Backbone, BackboneError, preprocess_for
from vfer.litert import dequantize, load_interpreter

MODELS = [(paths.BACKBONE_INT8, 172), (paths.BACKBONE_TF1, 169)]


@pytest.mark.parametrize(("src", "pool_index"), MODELS, ids=["tf2-int8", "tf1-uint8"])
def test_cut_backbone_equals_pool_tensor_of_original(
    tmp_path: Path, src: Path, pool_index: int
) -> None:
    if not src.exists():
        pytest.skip(f"{src} absent")
    data = src.read_bytes()
    assert find_pool_tensor(data) == pool_index
    cut = tmp_path / "backbone.tflite"
    cut.write_bytes(cut_at_pool(data))
    assert cut.stat().st_size < len(data)  # the classifier's weights are gone

    original = load_interpreter(src, preserve_all=True)
    detail = next(d for d in original.get_tensor_details() if d["index"] == pool_index)
    rng = np.random.default_rng(1)
    with Backbone.from_path(cut) as f:
        for _ in range(3):
            crop = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
            original.set_tensor(original.get_input_details()[0]["index"], crop[np.newaxis])
            original.invoke()
            expected = dequantize(original.get_tensor(pool_index), detail).reshape(-1)
            got = f.embed(crop)
            assert got.shape == (1280,) and got.dtype == np.float32
            np.testing.assert_array_equal(got, expected)
            assert np.abs(got).sum() > 0


def test_cut_model_has_one_float_output_and_a_signature(tmp_path: Path, backbone_src: Path) -> None:
    cut = tmp_path / "b.tflite"
    cut.write_bytes(cut_at_pool(backbone_src.read_bytes()))
    interp = load_interpreter(cut)
    (out,) = interp.get_output_details()
    assert list(out["shape"]) == [1, 1280] and out["dtype"] == np.float32
    assert interp.get_signature_list() == {
        "serving_default": {"inputs": ["image"], "outputs": ["embedding"]}
    }


def test_uncut_classifier_is_refused_as_backbone(backbone_src: Path) -> None:
    with pytest.raises(BackboneError, match="expected 1280"):
        Backbone.from_path(backbone_src)


def test_garbage_and_wrong_tensor_are_refused() -> None:
    with pytest.raises(BackboneError, match="TFL3"):
        cut_at_pool(b"not a model at all")
    if paths.BACKBONE_INT8.exists():
        with pytest.raises(BackboneError, match="not 1280"):
            cut_at_pool(paths.BACKBONE_INT8.read_bytes(), tensor=0)


def test_embed_checks_crop_shape(tmp_path: Path, backbone_src: Path) -> None:
    cut = tmp_path / "b.tflite"
    cut.write_bytes(cut_at_pool(backbone_src.read_bytes()))
    with Backbone.from_path(cut) as f, pytest.raises(ValueError, match=r"\(224, 224, 3\)"):
        f.embed(np.zeros((100, 100, 3), np.uint8))


def test_preprocess_conventions() -> None:
    crop = np.array([[[0, 128, 255]]], dtype=np.uint8)
    assert preprocess_for({"dtype": np.uint8}, crop).tolist() == [[[[0, 128, 255]]]]
    assert preprocess_for({"dtype": np.int8}, crop).tolist() == [[[[-128, 0, 127]]]]
    np.testing.assert_allclose(
        preprocess_for({"dtype": np.float32}, crop), [[[[-1.0, 128 / 127.5 - 1, 1.0]]]], atol=1e-6
    )
