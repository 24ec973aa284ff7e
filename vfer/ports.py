"""Waiting for a local service to listen: the role scripts that start a broker or an aggregator
(the fleet simulation, its Docker fleet, pi-check) wait for its port here."""

from __future__ import annotations

import socket
import subprocess
import time


def wait_port(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 10.0,
    what: str = "the service",
) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection; RuntimeError when ``proc`` (the
    process expected to open it, if given) exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port} within {timeout:.0f} s")
