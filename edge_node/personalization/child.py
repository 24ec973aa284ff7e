"""The capture process's way to run TensorFlow work: a child ``python -m edge_node`` process.

Fine-tuning v and exporting its step model need TensorFlow (about 900 MB resident); the capture
loop needs only LiteRT and MediaPipe (about 200 MB). So the node never imports TensorFlow: the
personalization loop starts ``python -m edge_node adapt`` (the same command the nightly timer
runs) or ``python -m edge_node model install-central`` and waits for it. The child writes the new
head version and exits, giving its memory back; the capture loop switches at its next clip.

The adaptation child answers in a file, not on stdout: ``--result PATH`` makes it write its
typed report (:mod:`edge_node.personalization.protocol`) there, and v's tuned trainable weights
to the safetensors file the report names, once; the parent reads both and removes them.

:func:`run_child` reports the child's peak resident memory (``wait4``'s ``ru_maxrss``), so the
benchmark and the logs can show the capture process and the child separately.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_node.bundles import BundleHome
from edge_node.personalization.params import AdaptParams
from edge_node.personalization.protocol import ProtocolError, read_report, write_report
from edge_node.personalization.run import AdaptResult
from vfer import weights as wio

log = logging.getLogger(__name__)
CHILD_TIMEOUT_S = 3600.0


class ChildError(RuntimeError):
    """The child process failed; the message holds the end of its stderr."""


@dataclass(frozen=True)
class ChildRun:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    seconds: float
    peak_rss_mb: float  # the child's own peak resident set size


def run_child(
    args: list[str], *, stop: threading.Event | None = None, timeout_s: float = CHILD_TIMEOUT_S
) -> ChildRun:
    """Run ``python -m edge_node ARGS``; its stderr goes to ours (the node's log)."""
    argv = (sys.executable, "-m", "edge_node", *args)
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stdin=subprocess.DEVNULL)
        status, usage = _wait(proc, stop, t0 + timeout_s)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by _wait
        out.seek(0)
        stdout = out.read().decode("utf-8", "replace")
    run = ChildRun(argv, proc.returncode, stdout, time.monotonic() - t0, usage.ru_maxrss / 1024.0)
    log.info(
        "child %s exited %s after %.1f s (peak RSS %.0f MB)",
        " ".join(a for a in args[:2] if not a.startswith("-")),
        run.returncode,
        run.seconds,
        run.peak_rss_mb,
    )
    return run


def _wait(
    proc: subprocess.Popen[bytes], stop: threading.Event | None, deadline: float
) -> tuple[int, resource.struct_rusage]:
    """wait4 the child (its own rusage); SIGTERM it when ``stop`` is set or time runs out."""
    terminated = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            return status, usage
        if not terminated and ((stop is not None and stop.is_set()) or time.monotonic() > deadline):
            log.warning("stopping child %s", proc.pid)
            proc.terminate()
            terminated = True
        time.sleep(0.05)


def adapt_in_child(
    db: Path,
    bundle: Path,
    params: AdaptParams,
    *,
    stop: threading.Event | None = None,
    night: str | None = None,
) -> tuple[AdaptResult, ChildRun]:
    """One personalization in a child process; the result carries v's trainable weights.
    ``night``: the child marks it done (with the switch to the new head when it adapts)."""
    with tempfile.TemporaryDirectory(prefix="fedvfer-adapt-") as tmp:
        out = Path(tmp) / "result.json"
        args = ["adapt", "--db", str(db), "--bundle", str(bundle), *params.cli_args()]
        args += ["--night", night] if night is not None else []
        run = run_child([*args, "--result", str(out)], stop=stop)
        if run.returncode != 0:
            raise ChildError(f"adaptation child exited with {run.returncode} (see the log above)")
        try:
            report = read_report(out)
            weights = wio.load(Path(tmp) / report.weights_file) if report.weights_file else {}
        except (ProtocolError, OSError, wio.WeightsError) as exc:
            raise ChildError(f"adaptation child: {exc}") from None
    return AdaptResult.from_report(report, weights), run


def write_child_result(path: Path, result: AdaptResult) -> None:
    """The child's side of :func:`adapt_in_child`: the weights once, then the report."""
    weights_file = None
    if result.trainable:
        weights_file = f"{path.stem}.trainable.safetensors"
        wio.save(path.with_name(weights_file), result.trainable)
    write_report(path, result.report(weights_file))


def install_central_in_child(
    bundle: Path,
    version: int,
    round_id: int,
    classes: tuple[str, ...],
    trainable: dict[str, np.ndarray],
    *,
    stop: threading.Event | None = None,
) -> ChildRun:
    """Install a verified central v (written for the child as a safetensors file, no pickle)."""
    home = BundleHome(bundle)
    home.versions.mkdir(parents=True, exist_ok=True)
    weights = home.versions / f".central-v{version}.safetensors"
    weights.write_bytes(wio.to_bytes({n: np.asarray(a, np.float32) for n, a in trainable.items()}))
    try:
        args = ["model", "install-central", "--bundle", str(bundle), "--weights", str(weights)]
        args += ["--version", str(version), "--round", str(round_id)]
        run = run_child([*args, "--classes", ",".join(classes)], stop=stop)
    finally:
        weights.unlink(missing_ok=True)
    if run.returncode != 0:
        raise ChildError(f"install-central child exited with {run.returncode} (see the log above)")
    return run
