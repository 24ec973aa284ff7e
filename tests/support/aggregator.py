"""Synthetic heads and a subprocess handle for the aggregator: for tests, benchmarks and demos.

Nothing here is used by the service itself. :func:`random_v` draws a v head with the exact
spec layout (Glorot-like scales, so norms resemble a trained head); :func:`personalized`
moves it a little, the way a few epochs of fine-tuning would; :class:`AggregatorProcess`
runs ``python -m broker_aggregator`` as a real child process, stopped by its pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from broker_aggregator.store import State
from vfer import weights as wcodec
from vfer.heads_spec import vfer_spec
from vfer.messages import CentralHeader, unpack


def random_v(
    num_classes: int, rng: np.random.Generator, *, trainable_only: bool = True
) -> dict[str, np.ndarray]:
    """A v head with the spec's names and shapes; BN statistics are (0, 1) when included."""
    out: dict[str, np.ndarray] = {}
    for name, ws in vfer_spec(num_classes).items():
        if trainable_only and not ws.trainable:
            continue
        if name.endswith("moving_variance") or name.endswith("gamma"):
            arr = np.ones(ws.shape)
        elif name.endswith(("moving_mean", "beta", "bias")):
            arr = np.zeros(ws.shape)
        else:
            fan = sum(ws.shape)
            arr = rng.normal(0.0, np.sqrt(2.0 / fan), ws.shape)
        out[name] = arr.astype(np.float32)
    return out


def personalized(
    base: Mapping[str, np.ndarray], rng: np.random.Generator, step: float = 0.01
) -> dict[str, np.ndarray]:
    """``base`` plus a small random move per weight (what on-device fine-tuning looks like)."""
    return {n: (a + rng.normal(0.0, step, a.shape)).astype(np.float32) for n, a in base.items()}


def fleet_config(tmp: Path, broker_url: str, fleet: Mapping[str, Path], extra: str) -> Path:
    """``tmp/aggregator.yaml`` for a test fleet (its signing key, initial v and a state db in
    ``tmp``) plus ``extra`` YAML lines (the round, caps)."""
    cfg = tmp / "aggregator.yaml"
    cfg.write_text(
        f"broker_url: {broker_url}\nsigning_key_file: {fleet['priv']}\n"
        f"initial_weights: {fleet['initial']}\nstate_db: {tmp / 'agg.db'}\n{extra}"
    )
    return cfg


def trainable_weights(path: Path) -> dict[str, np.ndarray]:
    """The weights a node sends: a head file without BatchNorm's moving statistics."""
    from vfer import weights as wcodec

    return {k: v for k, v in wcodec.load(path).items() if "moving" not in k}


class AggregatorProcess:
    """``python -m broker_aggregator <command> <args>`` with its log in a file."""

    def __init__(self, args: list[str], log_path: Path, command: str = "run") -> None:
        self.args = args
        self.log_path = log_path
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AggregatorProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "broker_aggregator", self.command, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return text in self.log()
            time.sleep(0.05)
        return False


def poison_rows(state: State) -> list[tuple[str, str | None, str]]:
    """(topic, update_id, reason) of every row of the aggregator's poison table, oldest first."""
    rows = state.db.execute("SELECT topic, update_id, reason FROM poison ORDER BY id")
    return [(str(r[0]), r[1], str(r[2])) for r in rows.fetchall()]


def stored_central(db: Path, version: int) -> tuple[CentralHeader, dict[str, np.ndarray]]:
    """The newest central the aggregator stored in its state ``db``, which must be ``version``."""
    state = State(db)
    try:
        latest = state.latest_central()
    finally:
        state.close()
    assert latest is not None and latest[0] == version, latest and latest[0]
    header, body = unpack(latest[1], CentralHeader)
    return header, wcodec.from_bytes(body)
