"""The CLI contract other issues and acceptance checks rely on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vfer.backbone import Backbone
from vfer.bundle import Bundle

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_model_summary_prints_the_papers_figures() -> None:
    out = run("training", "model-summary", "--classes", "6", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["g"]["trainable"] == 662_534
    assert summary["v"]["trainable"] == 208_582
    assert summary["v"]["non_trainable"] == 2_944
    assert summary["f"]["output_dim"] == 1280 and summary["f"]["trainable"] == 0


def test_backbone_from_tflite_then_export_bundle(tmp_path: Path, backbone_src: Path) -> None:
    out = run(
        "training", "backbone", "--from-tflite", str(backbone_src), "--out", str(tmp_path / "f")
    )
    assert out.returncode == 0, out.stderr
    with Backbone.from_path(tmp_path / "f" / "backbone.tflite") as f:
        assert f.embed(np.zeros((224, 224, 3), np.uint8)).shape == (1280,)
    out = run(
        "training", "export-bundle", "--classes", "happiness,sadness,anger,neutral",
        "--backbone", str(tmp_path / "f" / "backbone.tflite"), "--out", str(tmp_path / "B"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    bundle = Bundle.load(tmp_path / "B")
    assert bundle.classes == ("happiness", "sadness", "anger", "neutral")
    # a second export to the same folder is refused with one line, no traceback
    again = run(
        "training", "export-bundle", "--classes", "4",
        "--backbone", str(tmp_path / "f" / "backbone.tflite"), "--out", str(tmp_path / "B"),
    )  # fmt: skip
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "Traceback" not in again.stderr


def test_bad_inputs_get_one_line_errors(tmp_path: Path) -> None:
    missing = run(
        "training",
        "backbone",
        "--from-tflite",
        str(tmp_path / "nope.tflite"),
        "--out",
        str(tmp_path),
    )
    assert (
        missing.returncode == 1
        and "Error: " in missing.stderr
        and "no such model file" in missing.stderr
    )
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    bad = run("training", "backbone", "--from-tflite", str(junk), "--out", str(tmp_path / "o"))
    assert bad.returncode == 1 and "TFL3" in bad.stderr and "Traceback" not in bad.stderr


def _online() -> bool:
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
        return True
    except OSError:
        return False


def test_keras_backbone_offline_says_what_to_do_instead(tmp_path: Path) -> None:
    if _online():
        pytest.skip(
            "this machine can reach the Keras weights host; the offline message cannot be shown"
        )
    out = run(
        "training",
        "backbone",
        "--from-keras-imagenet",
        "--precision",
        "float32",
        "--out",
        str(tmp_path),
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("Error: cannot get the Keras ImageNet weights") and "--from-tflite" in last
    )
    assert "Traceback" not in out.stderr


def test_keras_conversion_path_float32_and_int8(tmp_path: Path) -> None:
    """The Keras route, with random weights instead of the ImageNet download."""
    from training.backbone import from_keras_imagenet

    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(4)]
    for precision in ("float32", "int8"):
        path = from_keras_imagenet(
            tmp_path / precision, precision, crops if precision == "int8" else None, weights=None
        )
        with Backbone.from_path(path) as f:
            e = f.embed(crops[0])
        assert e.shape == (1280,) and np.isfinite(e).all()
