"""The fleet simulation end to end: real broker, real aggregator and node processes, real models.

Uses the "tiny" world so it fits the test suite; `make demo` runs the "demo" one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import pytest

from tests.conftest import require
from tests.support import paths
from tests.support.mosquitto import Broker
from vfer import signing
from vfer.messages import open_central

pytestmark = pytest.mark.slow


def simulate(
    out: Path, cache: Path, seed: int, *extra: str, env: dict[str, str] | None = None
) -> dict:
    argv = [sys.executable, "-m", "training", "simulate", "--nodes", "2", "--rounds", "2", "--profile", "tiny",
            "--seed", str(seed), "--out", str(out), "--cache", str(cache), "--timeout", "420", "--json", *extra]  # fmt: skip
    full = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "FEDVFER_MODELS": str(paths.MODELS),
        **(env or {}),
    }
    done = subprocess.run(argv, capture_output=True, text=True, env=full, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def retained_central(url: str) -> bytes:
    host, port = url.removeprefix("mqtt://").split(":")
    got = threading.Event()
    box: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.on_message = lambda _c, _u, m: (box.append(m.payload), got.set())
    c.connect(host, int(port))
    c.subscribe("fedvfer/central/bundle", qos=1)
    c.loop_start()
    try:
        assert got.wait(10), "no retained central on the broker"
    finally:
        c.loop_stop()
        c.disconnect()
    return box[0]


def figures(report: dict) -> list:
    nodes = [(n["micro_f1_before"], n["micro_f1_after"]) for n in report["nodes"]]
    return nodes + [c["micro_f1"] for c in report["central"]]


def check_report(report: dict, nodes: int, rounds: int, out: Path) -> None:
    assert len(report["nodes"]) == nodes
    assert [row["round"] for row in report["central"]] == list(range(rounds + 1))
    for i, row in enumerate(report["nodes"]):
        assert row["recorded_clips"] > 0 and row["personalized"]
        assert 0.0 <= row["micro_f1_before"] <= 1.0 and 0.0 <= row["micro_f1_after"] <= 1.0
        # the node recorded its whole camera before the rounds, and kept its own adapt results
        work = out / "sim" / "nodes" / f"slot-{i}" / "work"
        health = json.loads((work / "health.json").read_text())
        assert health["phase"] == "federating"
        assert health["recorded_clips"] == row["recorded_clips"]
        own = json.loads((work / "adaptations.json").read_text())
        adapted = [a for a in own if a["status"] == "adapted"]
        assert 1 <= len(adapted) == row["personalizations"] <= rounds
        assert all(a["clips_total"] == row["recorded_clips"] for a in adapted)
        # the gate ran in report mode: its verdict on the scored head is the node's own record
        assert row["gate"] == {k: adapted[0]["gate"][k] for k in ("passed", "reasons", "notes")}
        assert isinstance(row["gate"]["passed"], bool)
        assert row["gate"]["passed"] or row["gate"]["reasons"]
    fleet = report["summary"]["fleet"]
    changes = [row["micro_f1_change"] for row in report["nodes"]]
    micro = fleet["micro_f1_change"]
    assert (fleet["nodes"], micro["n"]) == (nodes, nodes)
    assert micro["mean"] == pytest.approx(sum(changes) / nodes)
    assert min(changes) <= micro["ci_low"] <= micro["mean"] <= micro["ci_high"] <= max(changes)
    assert micro["gained"] + micro["lost"] + micro["same"] == nodes
    assert micro["gained"] == sum(c > 0 for c in changes)
    assert report["summary"]["gate"]["judged"] == nodes
    assert all(c["submissions"] >= 1 for c in report["central"][1:])
    # g is trained on its own synthetic image corpus; the report states it on the nodes' clips
    teacher = report["summary"]["teacher_on_nodes"]
    assert teacher["clips"] == sum(row["recorded_clips"] for row in report["nodes"])
    assert 0.0 <= teacher["accuracy"] <= 1.0
    assert all(0.0 <= row["teacher_accuracy"] <= 1.0 for row in report["nodes"])


def test_headless_rounds_against_a_plain_mosquitto_then_without_one(
    mosquitto: Broker, tmp_path: Path
) -> None:
    require(paths.FACE_MODEL)
    cache = tmp_path / "cache"
    first = simulate(tmp_path / "a", cache, 1, "--broker", mosquitto.url)
    check_report(first, 2, 2, tmp_path / "a")
    assert first["run"]["broker"] == "external"
    key = signing.load_public_key(tmp_path / "a" / "sim" / "fleet" / "fleet_public_key.pem")
    header, _body = open_central(retained_central(mosquitto.url), key)
    assert header.round_id == 2 and header.num_submissions >= 1

    # `make demo` without a mosquitto binary on PATH: the embedded in-process amqtt broker
    no_mosquitto = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "mosquitto").exists()
    )
    assert shutil.which("mosquitto", path=no_mosquitto) is None
    second = simulate(tmp_path / "b", cache, 2, env={"PATH": no_mosquitto})
    check_report(second, 2, 2, tmp_path / "b")
    assert second["run"]["broker"] == "amqtt"
    # nothing is hard-coded: another seed (other subjects, other training) gives other figures
    assert figures(first) != figures(second)
    for out in (tmp_path / "a", tmp_path / "b"):
        assert "95% CI" in (out / "report.md").read_text()
        assert (
            (out / "report.md").is_file()
            and (out / "nodes_f1.png").is_file()
            and (out / "central_rounds.png").is_file()
        )


def _cmdline(proc: psutil.Process) -> str:
    """A child's command line, or "" once it has exited (a zombie has none to read)."""
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ""


def _as_a_terminal_job() -> None:
    """A terminal's foreground job gets Ctrl-C; a child of a background job (`cmd &` in a
    script, nohup) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_every_process_it_started(tmp_path: Path) -> None:
    """SIGINT in the middle of the rounds: the nodes, the aggregator and the private broker all go."""
    import signal
    import time

    require(paths.FACE_MODEL)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "training", "simulate", "--nodes", "2", "--rounds", "20", "--profile", "tiny",
            "--out", str(out), "--cache", str(tmp_path / "cache"), "--timeout", "600"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "FEDVFER_MODELS": str(paths.MODELS)}
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_as_a_terminal_job
        )
    me = psutil.Process(proc.pid)
    try:
        deadline = time.monotonic() + 600
        started: list[psutil.Process] = []
        while time.monotonic() < deadline and proc.poll() is None:
            kids = me.children(recursive=True)
            names = " ".join(_cmdline(k) for k in kids)
            if names.count("sim-node") >= 2 and "broker_aggregator" in names:
                started = kids
                break
            time.sleep(0.5)
        assert started, f"the fleet never started: {stderr.read_text()[-2000:]}"
        time.sleep(3)  # let the nodes get going
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) != 0
        _gone, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, [_cmdline(p) for p in alive]
        leftovers = [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(out) in " ".join(p.info["cmdline"] or [])
        ]
        assert not leftovers
    finally:  # a failed check leaves no fleet running for the rest of the suite
        for p in psutil.process_iter(["cmdline"]):
            if str(out) in " ".join(p.info["cmdline"] or []):
                with contextlib.suppress(psutil.Error):
                    p.kill()
