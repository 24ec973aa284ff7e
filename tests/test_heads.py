"""g and v exactly as the paper, and the streaming step model's parity with Keras v."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
tf = pytest.importorskip("tensorflow")

from vfer.export import ifer_tflite, vfer_step_tflite  # noqa: E402
from vfer.heads import build_ifer, build_vfer, get_weights, param_counts, set_weights  # noqa: E402
from vfer.heads_spec import count_params, ifer_spec, vfer_spec  # noqa: E402
from vfer.runtime import IferHead, VferStep  # noqa: E402


def _randomized(model: object, seed: int) -> dict[str, np.ndarray]:
    """Weights with non-trivial BatchNorm statistics so the parity test means something."""
    rng = np.random.default_rng(seed)
    w = get_weights(model)
    for name, arr in w.items():
        if name.endswith("moving_mean"):
            w[name] = rng.normal(0, 0.5, arr.shape).astype(np.float32)
        elif name.endswith("moving_variance"):
            w[name] = rng.uniform(0.3, 2.0, arr.shape).astype(np.float32)
        elif name.endswith(("gamma", "beta", "bias")):
            w[name] = rng.normal(0.5 if name.endswith("gamma") else 0.0, 0.3, arr.shape).astype(
                np.float32
            )
    set_weights(model, w)
    return w


@pytest.mark.parametrize("k", [4, 6])
def test_parameter_counts_match_the_weight_table(k: int) -> None:
    g, v = param_counts(build_ifer(k)), param_counts(build_vfer(k))
    assert g == count_params(ifer_spec(k))
    assert v == count_params(vfer_spec(k))
    if k == 6:
        assert g["trainable"] == 662_534
        assert (v["trainable"], v["non_trainable"]) == (208_582, 2_944)


def test_weight_names_round_trip() -> None:
    v = build_vfer(6)
    w = get_weights(v)
    assert set(w) == set(vfer_spec(6))
    w2 = {n: a + 1.0 for n, a in w.items()}
    set_weights(v, w2)
    assert all(np.array_equal(get_weights(v)[n], w2[n]) for n in w)
    with pytest.raises(ValueError, match="missing"):
        set_weights(v, {"v_out.bias": w["v_out.bias"]})
    with pytest.raises(ValueError, match="shape"):
        set_weights(v, {"v_out.bias": np.zeros(3, np.float32)}, partial=True)


def test_step_model_reproduces_keras_v_on_zero_prepadded_clips(tmp_path: Path) -> None:
    v = build_vfer(6)
    w = _randomized(v, seed=3)
    path = tmp_path / "vfer_step.tflite"
    path.write_bytes(vfer_step_tflite(w))
    rng = np.random.default_rng(4)
    lengths = [1, 7, 56, 75]
    t_max = max(lengths) + 5
    batch = np.zeros((len(lengths), t_max, 1280), np.float32)
    clips = []
    for i, n in enumerate(lengths):
        clip = np.abs(rng.normal(0, 1, (n, 1280))).astype(np.float32)  # embeddings are post-ReLU
        batch[i, t_max - n :] = clip
        clips.append(clip)
    expected = np.asarray(v(batch, training=False))
    with VferStep.from_path(path) as step:
        assert step.num_classes == 6
        for clip, exp in zip(clips, expected, strict=True):
            step.reset()
            for frame in clip:
                probs = step.step(frame)
            np.testing.assert_allclose(probs, exp, atol=1e-5)
            assert step.frames == len(clip)
        # the state resets: the same clip twice gives the same answer
        np.testing.assert_allclose(step.predict_clip(clips[2]), expected[2], atol=1e-5)


def test_ifer_tflite_matches_keras_g(tmp_path: Path) -> None:
    g = build_ifer(4)
    w = _randomized(g, seed=5)
    path = tmp_path / "ifer_head.tflite"
    path.write_bytes(ifer_tflite(w))
    x = np.abs(np.random.default_rng(6).normal(0, 1, (5, 1280))).astype(np.float32)
    with IferHead.from_path(path) as head:
        np.testing.assert_allclose(
            head.predict_frames(x), np.asarray(g(x, training=False)), atol=1e-5
        )
        with pytest.raises(ValueError, match="1280"):
            head.predict_frame(np.zeros(12, np.float32))
