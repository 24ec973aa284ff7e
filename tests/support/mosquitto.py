"""A private, real Mosquitto broker for tests: own config, free port, stopped by its pid."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


@dataclass
class Broker:
    port: int
    proc: subprocess.Popen[bytes]
    conf: Path
    log: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads password, ACL and CRL files."""
        import signal

        self.proc.send_signal(signal.SIGHUP)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_mosquitto(workdir: Path, conf_body: str = "", port: int | None = None) -> Broker:
    """Start mosquitto with ``conf_body`` plus a listener on ``port`` (free one if None).

    ``conf_body`` may contain ``{port}``; when it defines its own ``listener`` lines, pass the port
    it uses. Without any listener in conf_body a plain anonymous loopback listener is added.
    When running as root, ``user root`` is added (unless conf_body sets ``user``) so the broker
    can write its log and persistence in ``workdir``.
    """
    binary = mosquitto_binary()
    if binary is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "mosquitto.log"
    body = conf_body.replace("{port}", str(port))
    if "listener" not in body:
        body = f"listener {port} 127.0.0.1\nallow_anonymous true\n" + body
    # As root, mosquitto drops to the `mosquitto` user, which cannot write the log or the
    # persistence file inside pytest's private tmp folders: stay root (a test broker only).
    stay_root = os.geteuid() == 0 and not re.search(r"(?m)^\s*user\s", body)
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        ("user root\n" if stay_root else "")
        + f"persistence false\nlog_dest file {log}\nlog_type all\n{body}\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"mosquitto exited: {err} {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Broker(port, proc, conf, log)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not open its port within 10 s")


def verify_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches a mosquitto ``$7$`` hash (the oracle for
    :func:`provisioning.mosquitto.hash_password`, as ``mosquitto_passwd`` checks it)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7":
        raise ValueError("not a mosquitto $7$ password hash")
    iterations, salt, digest = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
    mine = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, len(digest))
    return hmac.compare_digest(mine, digest)
