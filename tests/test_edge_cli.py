"""The edge node's commands as the acceptance items write them, run as real processes."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge_node.store import ClipStore
from tests.conftest import require
from tests.support import paths
from tests.support.edge_fixtures import EdgeBundles, build_bundles

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def edge_bundles(tmp_path_factory: pytest.TempPathFactory) -> EdgeBundles:
    return build_bundles(tmp_path_factory.getbasetemp())  # built once per session


HAP = paths.CREMA_D / "VideoFlash" / "1001_DFA_HAP_XX.flv"


def node(
    bundles: EdgeBundles, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_node", *args],
        capture_output=True,
        text=True,
        env=bundles.env(),
        timeout=timeout,
    )


def test_ingest_prints_the_stored_clip_and_its_prediction(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    db = tmp_path / "N.db"
    out = node(
        edge_bundles,
        "ingest",
        "--video",
        str(require(HAP)),
        "--db",
        str(db),
        "--bundle",
        str(edge_bundles.a),
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("clip 1: 56 frames, face 100%, VFER ")
    assert lines[-1] == "1 clips stored from 56 frames (56 with a face, 0 corrupt skipped)"
    out = node(
        edge_bundles,
        "ingest",
        "--video",
        str(HAP),
        "--db",
        str(db),
        "--bundle",
        str(edge_bundles.a),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    [clip] = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert clip["id"] == 2 and clip["frames"] == 56
    assert clip["prediction"] == max(clip["vfer_probs"], key=clip["vfer_probs"].get)
    with ClipStore(db) as store:
        assert [c.frame_count for c in store.clips()] == [56, 56]


def test_ingest_of_no_face_stores_nothing_and_bad_input_is_one_line(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    db = tmp_path / "N.db"
    out = node(
        edge_bundles,
        "ingest",
        "--video",
        str(require(paths.VIDEO / "no_face.mp4")),
        "--db",
        str(db),
        "--bundle",
        str(edge_bundles.a),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0 clips stored from 95 frames (0 with a face, 0 corrupt skipped)"
    out = node(
        edge_bundles,
        "ingest",
        "--video",
        str(tmp_path / "nope.mp4"),
        "--db",
        str(db),
        "--bundle",
        str(edge_bundles.a),
    )
    assert out.returncode == 1 and out.stderr.strip().endswith(
        f"Error: no such video file or folder: {tmp_path / 'nope.mp4'}"
    )
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 7")
    conn.close()
    out = node(
        edge_bundles,
        "ingest",
        "--video",
        str(HAP),
        "--db",
        str(db),
        "--bundle",
        str(edge_bundles.a),
    )
    assert (
        out.returncode == 1 and "Error: " in out.stderr and "schema version 7, newer" in out.stderr
    )
    assert "Traceback" not in out.stderr


def test_run_stops_cleanly_on_sigterm_with_whole_clips(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    db = tmp_path / "N.db"
    cfg = tmp_path / "node.yaml"
    cfg.write_text("log_level: DEBUG\nclips:\n  min_frames: 1\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_node",
            "run",
            "--config",
            str(cfg),
            "--no-kiosk",
            "--source",
            str(require(paths.VIDEO / "WolfgangLanger_Pexels.mp4")),
            "--bundle",
            str(edge_bundles.a),
            "--db",
            str(db),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=edge_bundles.env(),
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # wait until a clip is being recorded
            seen.append(line)
            if "clip started (recording: True)" in line:
                break
        else:
            pytest.fail("the node never started a clip:\n" + "".join(seen))
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "SIGTERM received" in stderr and "1 clips saved" in stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        per_clip = dict(
            conn.execute("SELECT clip_id, count(*) FROM frames GROUP BY clip_id").fetchall()
        )
        counts = dict(conn.execute("SELECT id, frame_count FROM clips").fetchall())
    conn.close()
    assert per_clip == counts and len(counts) == 1


def test_run_headless_writes_clips_and_forget_deletes_them(
    edge_bundles: EdgeBundles, tmp_path: Path
) -> None:
    db = tmp_path / "N.db"
    cfg = tmp_path / "node.yaml"
    cfg.write_text("camera:\n  realtime: false\nkiosk:\n  enabled: false\n")
    out = node(
        edge_bundles,
        "run",
        "--config",
        str(cfg),
        "--source",
        str(require(paths.VIDEO / "WolfgangLanger_Pexels.mp4")),
        "--bundle",
        str(edge_bundles.a),
        "--db",
        str(db),
        "--max-frames",
        "260",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("260 frames") and "2 clips saved" in out.stdout
    with ClipStore(db) as store:
        assert [c.frame_count for c in store.clips()] == [240, 20]  # cut at max_s = 10 s
    no = subprocess.run(
        [sys.executable, "-m", "edge_node", "forget", "--all", "--db", str(db)],
        input="n\n",
        capture_output=True,
        text=True,
        env=edge_bundles.env(),
        timeout=60,
    )
    assert no.returncode != 0 and "Delete all 2 clips" in no.stdout
    out = node(edge_bundles, "forget", "--all", "--db", str(db), "--yes")
    assert out.returncode == 0 and out.stdout.startswith("deleted 2 clips")
    with ClipStore(db) as store:
        assert store.count() == 0


def test_federation_without_a_fleet_key_is_refused_at_start(tmp_path: Path) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text("federation:\n  enabled: true\n")
    out = subprocess.run(
        [sys.executable, "-m", "edge_node", "run", "--config", str(cfg), "--source", str(tmp_path),
         "--face-model", str(require(paths.FACE_MODEL))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1
    assert "federation.enabled needs federation.fleet_public_key" in out.stderr
    assert "Traceback" not in out.stderr
