"""The demo's embedded broker: a private Mosquitto on a free port, else an in-process amqtt.

Nothing is installed or left running: the broker lives as long as the handle, and
:meth:`BrokerHandle.stop` ends it (Mosquitto by its pid).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vfer.ports import wait_port

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    """``mosquitto`` on PATH (Debian puts it in /usr/sbin, on root's PATH), else None."""
    return shutil.which("mosquitto")


def mosquitto_conf(port: int, workdir: Path, nodes: int) -> str:
    """Loopback, anonymous (the demo's private broker), sized for v heads and the fleet."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence false",
        "max_packet_size 4000000",  # one v head is about 834 KB as float32
        f"max_queued_messages {max(1000, 20 * nodes)}",  # the default 1,000 silently drops QoS 1
        "log_dest stderr",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # keep access to our private temp folder
    return "\n".join(lines) + "\n"


class RunningBroker(Protocol):
    """A broker the simulation started: where nodes reach it, what it is, and how to stop it."""

    @property
    def url(self) -> str: ...

    @property
    def kind(self) -> str: ...

    def stop(self) -> None: ...


@dataclass
class BrokerHandle:
    url: str
    kind: str  # "mosquitto" or "amqtt"
    _proc: subprocess.Popen[bytes] | None = None
    _inproc: Any = None
    _tmp: Path | None = None
    _log: Any = field(default=None, repr=False)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        if self._inproc is not None:
            self._inproc.stop()
            self._inproc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _quiet_amqtt(log_dir: Path | None) -> None:
    """amqtt logs its own hiccups (session take-overs, tracebacks from its client loop) loudly:
    keep them in ``log_dir/amqtt.log`` instead of on the demo's console."""
    handler: logging.Handler = (
        logging.FileHandler(log_dir / "amqtt.log") if log_dir else logging.NullHandler()
    )
    for name in ("amqtt", "asyncio", "transitions"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False


def start_embedded_broker(
    nodes: int = 4, prefer: str = "auto", log_dir: Path | None = None
) -> BrokerHandle:
    """Mosquitto when its binary is on PATH (``prefer="auto"``/``"mosquitto"``), else amqtt in-process."""
    port = free_port()
    binary = mosquitto_binary() if prefer in ("auto", "mosquitto") else None
    if binary:
        tmp = Path(tempfile.mkdtemp(prefix="fedvfer-broker-"))
        conf = tmp / "mosquitto.conf"
        conf.write_text(mosquitto_conf(port, tmp, nodes))
        logfile = open((log_dir or tmp) / "mosquitto.log", "ab")  # noqa: SIM115 - closed by stop()
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=logfile, stderr=subprocess.STDOUT)
        handle = BrokerHandle(
            f"mqtt://127.0.0.1:{port}", "mosquitto", _proc=proc, _tmp=tmp, _log=logfile
        )
        try:
            wait_port(port, proc, what="the broker")
        except BaseException:
            handle.stop()
            raise
        log.info("broker: private mosquitto %s on port %d (pid %d)", binary, port, proc.pid)
        return handle
    if prefer == "mosquitto":
        raise RuntimeError("no mosquitto binary on PATH (apt-get install mosquitto)")
    from training.sim.embedded_broker import start_embedded_broker as start_amqtt

    _quiet_amqtt(log_dir)
    inproc = start_amqtt("127.0.0.1", port)
    wait_port(port, what="the broker")
    log.info("broker: no mosquitto on PATH, in-process amqtt on port %d (MQTT 3.1.1)", port)
    return BrokerHandle(inproc.url, "amqtt", _inproc=inproc)
