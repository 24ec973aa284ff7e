"""Issue 15, item 5: every CLI hides the native libraries' INFO/WARNING lines; --verbose keeps them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require
from tests.support import paths
from tests.support.edge_fixtures import EdgeBundles, build_bundles
from vfer.cli import is_native_noise


@pytest.mark.parametrize(
    ("line", "noise"),
    [
        (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", True),
        (b"INFO: [environment.cc:36] Creating LiteRT environment with options", True),
        (
            b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
            True,
        ),
        (
            b"W0000 00:00:1796157485.254657   15723 inference_runner_litert.cc:1433] Input tensor",
            True,
        ),
        (b"I1201 20:31:55.123456    8086 loader.cc:471] SavedModel load for tags", True),
        (
            b"E0000 00:00:1796157495.298011   15135 cuda_platform.cc:52] failed call to cuInit: x",
            True,
        ),
        (b"E1201 20:31:55.123456    8086 foo.cc:1] a real native error", False),
        (b"F0000 00:00:1.5 1 check.cc:9] Check failed: x", False),
        (b"2026-12-01 20:31:55,123 INFO edge_node.pipeline: clip 3: 40 frames", False),
        (b"Error: no such database: x.db", False),
        (b"embedding frames \xe2\x94\x81\xe2\x94\x81 100% 0:00:05", False),
    ],
)
def test_native_noise_is_told_from_our_lines(line: bytes, noise: bool) -> None:
    assert is_native_noise(line) is noise


@pytest.fixture(scope="session")
def edge_bundles(tmp_path_factory: pytest.TempPathFactory) -> EdgeBundles:
    return build_bundles(tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_ingest_console_is_quiet_unless_verbose(edge_bundles: EdgeBundles, tmp_path: Path) -> None:
    video = require(paths.VIDEO / "single_face.mp4")
    env = {
        k: v
        for k, v in edge_bundles.env().items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel")
    }
    env.pop("FEDVFER_VERBOSE", None)

    def ingest(db: str, *extra: str) -> subprocess.CompletedProcess[str]:
        argv = [
            "ingest",
            "--video",
            str(video),
            "--db",
            str(tmp_path / db),
            "--bundle",
            str(edge_bundles.a),
        ]
        return subprocess.run(
            [sys.executable, "-m", "edge_node", *argv, *extra],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip

    quiet = ingest("q.db")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.startswith("clip 1: ")
    assert not [line for line in quiet.stderr.splitlines() if is_native_noise(line.encode())]
    loud = ingest("v.db", "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in loud.stderr
