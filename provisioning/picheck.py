"""``make pi-check`` (``python -m provisioning pi-check``): the node on a Raspberry Pi's CPU.

For each release (Bookworm: Raspberry Pi OS 12, Python 3.11; Trixie: 13, Python 3.13) it makes
an arm64 Debian root (cached, :mod:`provisioning.piroot`), installs the node with the Pi
installer's own ``install.sh`` (its package list, its pip extra, the wheel and bundle and face
model from the card as ``provisioning image`` lays them out), then runs the node there under
qemu user emulation: ``edge_node run`` on a CREMA-D clip and on the Wolfgang video, ``edge_node
adapt`` on the clips recorded, ``edge_node evaluate`` on 20 London photos, and one federation
round (``python -m provisioning.picheck_node``) against mosquitto with the fleet's generated
TLS/ACL config and the aggregator, both on the host's 127.0.0.1. A table per release; exit 1
when any step fails. Logs in ``<cache>/logs/``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from provisioning import picheck_inputs as inputs
from provisioning import piroot
from provisioning.installer import STATE, VENV

log = logging.getLogger(__name__)

RELEASES = {"bookworm": "Raspberry Pi OS 12", "trixie": "Raspberry Pi OS 13"}
#: The wheels whose versions the table shows (pip distribution names).
WHEELS = (
    "numpy",
    "tensorflow",
    "ai-edge-litert",
    "mediapipe",
    "opencv-contrib-python",
    "paho-mqtt",
    "cryptography",
)
PY = f"{VENV}/bin/python"
BUNDLE = f"{STATE}/bundle"
DB = f"{STATE}/pi-check.db"
STEP_TIMEOUT_S = 3600
#: pip unpacking TensorFlow and the rest under emulation: over an hour on a loaded machine
INSTALL_TIMEOUT_S = 4 * 3600


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    note: str = ""


@dataclass
class Report:
    release: str
    machine: str = ""
    python: str = ""
    wheels: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)


def render(report: Report) -> str:
    """The release's table (Markdown, so docs/deployment.md can hold it as printed)."""
    head = f"### {report.release} ({RELEASES.get(report.release, 'Debian')}), arm64 under qemu"
    lines = [head, ""]
    lines.append(f"Python {report.python or '?'}; " + (report.machine or "arm64"))
    if report.wheels:
        lines.append("; ".join(f"{k} {v}" for k, v in report.wheels.items()))
    lines += ["", "| step | result | time (s) | note |", "|---|---|---:|---|"]
    for s in report.steps:
        note = s.note.replace("|", "/").replace("\n", " ")
        lines.append(f"| {s.name} | {'ok' if s.ok else 'FAILED'} | {s.seconds:.0f} | {note} |")
    verdict = "all steps passed" if report.ok else "FAILED"
    return "\n".join([*lines, "", f"{report.release}: {verdict}", ""])


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def step_commands() -> list[tuple[str, str, Callable[[str], str]]]:
    """(name, shell inside the root, note from its output) for the node's steps."""
    m = inputs.MEDIA
    run = f"{PY} -m edge_node run --bundle {BUNDLE} --db {DB} --no-kiosk --no-loop --source"
    adapt = f"{PY} -m edge_node adapt --db {DB} --bundle {BUNDLE} --p 2 --p-threshold 0"
    evaluate = f"{PY} -m edge_node evaluate --bundle {BUNDLE} --manifest {m}/london.csv --json"
    return [
        ("run: CREMA-D clip", f"{run} {m}/crema", last_line),
        ("run: Wolfgang video", f"{run} {m}/wolfgang", last_line),
        ("adapt (clips above)", f"{adapt} --min-clips 2 --gate-report --json", _adapt_note),
        (f"evaluate: {inputs.LONDON_PHOTOS} London photos", evaluate, _evaluate_note),
    ]


def _adapt_note(out: str) -> str:
    try:
        r = json.loads(out)
    except ValueError:
        return last_line(out)
    return f"status {r.get('status')}, selected {sum(r.get('selected_per_class', {}).values())}"


def _evaluate_note(out: str) -> str:
    try:
        r = json.loads(out)
    except ValueError:
        return last_line(out)
    rows = r.get("meta", {}).get("rows", {})
    shown = {k: rows[k] for k in ("total", "scored", "no_face") if k in rows}
    return f"rows {shown}" if shown else "report written"


class Session:
    """One release's root, entered with its mounts for the check's length."""

    def __init__(self, root: piroot.Root, logs: Path) -> None:
        self.root = root
        self.log = logs / f"pi-check-{root.release}.log"

    def sh(self, script: str, timeout: float = STEP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """``script`` in the root; on a timeout its whole process group is killed (no orphans)."""
        cmd = piroot.chroot_cmd(self.root, script)
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        ) as p:
            try:
                out, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
                raise
        proc = subprocess.CompletedProcess(cmd, p.returncode, out, err)
        with self.log.open("a") as fh:
            fh.write(f"\n$ {script}\n[exit {proc.returncode}]\n{proc.stdout}\n{proc.stderr}\n")
        return proc

    def timed(
        self,
        report: Report,
        name: str,
        script: str,
        note: Callable[[str], str],
        timeout: float = STEP_TIMEOUT_S,
    ) -> bool:
        t0 = time.monotonic()
        try:
            proc = self.sh(script, timeout)
            ok, text = proc.returncode == 0, note(proc.stdout) if proc.returncode == 0 else ""
            if not ok:
                text = f"exit {proc.returncode}: {last_line(proc.stderr or proc.stdout)}"
        except subprocess.TimeoutExpired:
            ok, text = False, f"timed out after {timeout:.0f} s"
        report.steps.append(Step(name, ok, time.monotonic() - t0, text))
        print(f"  {name}: {'ok' if ok else 'FAILED'} ({time.monotonic() - t0:.0f} s) {text}")
        return ok


def install_script() -> str:
    """The installer as the Pi runs it; on a root that has it already, the new wheel and the
    card's credentials (the installer itself runs once), then a fresh bundle and database."""
    src = inputs.BOOT_SRC
    return (
        f"set -e; if [ -e {STATE}/.installed ]; then "
        f"{VENV}/bin/pip install --quiet --no-deps --force-reinstall {src}/dist/*.whl; "
        f"{VENV}/bin/pip install --quiet $(ls {src}/dist/*.whl)[edge]; "
        f"install -m 0640 -g fedvfer {src}/etc/* /etc/fedvfer/; "
        f"else bash {src}/install.sh || {{ tail -30 /var/log/fedvfer-install.log; exit 1; }}; fi; "
        f"rm -rf {BUNDLE} {DB}; cp -r {src}/bundle {BUNDLE}"
    )


def versions_script() -> str:
    names = ",".join(repr(w) for w in WHEELS)
    code = (
        "import json,platform,importlib.metadata as m;"
        f"v={{n: m.version(n) for n in ({names},)}};"
        "import cv2, tensorflow, ai_edge_litert, mediapipe;"
        "print(json.dumps({'python': platform.python_version(), "
        "'machine': platform.machine(), 'wheels': v}))"
    )
    return f'{PY} -c "{code}"'


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_root(report: Report, root: piroot.Root, logs: Path, fresh: bool) -> bool:
    t0 = time.monotonic()
    try:
        piroot.debootstrap(root, logs / f"debootstrap-{root.release}.log")
        piroot.unpack(root, fresh=fresh)
        ok, note = True, f"{root.path}"
    except (subprocess.CalledProcessError, OSError) as e:
        ok, note = False, f"{e} (see {logs})"
    report.steps.append(Step("arm64 root (debootstrap, cached)", ok, time.monotonic() - t0, note))
    return ok


def prepare_host(report: Report, work: Path, node: str, shared: inputs.Shared) -> int | None:
    """The wheel, bundle and fleet on the host; the aggregator's port, None when it failed."""
    import shutil

    t0 = time.monotonic()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    port, agg_port = _free_port(), _free_port()
    try:
        wheel = inputs.build_wheel(work / "dist")
        inputs.build_bundle(work / "bundle", shared)
        inputs.make_fleet(work / "fleet", node, port, agg_port)
        ok, note = True, wheel.name
    except (subprocess.CalledProcessError, OSError, ValueError) as e:
        ok, note = False, str(e)
    report.steps.append(Step("host: wheel, bundle, fleet", ok, time.monotonic() - t0, note))
    return agg_port if ok else None


def federation_round(report: Report, session: Session, work: Path, agg_port: int) -> None:
    side = inputs.start_fleetside(work, agg_port)
    script = f"{PY} -m provisioning.picheck_node --config /etc/fedvfer/node.yaml"
    try:
        session.timed(report, "federation round (TLS, ACL, signed central)", script, last_line)
    finally:
        side.stop()


def check_release(
    release: str, cache: Path, shared: inputs.Shared, fresh: bool, video_seconds: float | None
) -> Report:
    report = Report(release)
    root = piroot.Root(release, cache)
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    work = cache / "work" / release
    node = f"pi-{release}"
    if not prepare_root(report, root, logs, fresh):
        return report
    agg_port = prepare_host(report, work, node, shared)
    if agg_port is None:
        return report
    inputs.stage(root.path, work, node, shared, video_seconds)
    session = Session(root, logs)
    with piroot.mounted(root):
        install = install_script()
        if not session.timed(
            report, "install (the Pi installer)", install, last_line, INSTALL_TIMEOUT_S
        ):
            return report
        read_versions(report, session)
        for name, script, note in step_commands():
            session.timed(report, name, script, note)
        federation_round(report, session, work, agg_port)
    return report


def read_versions(report: Report, session: Session) -> None:
    t0 = time.monotonic()
    proc = session.sh(versions_script())
    ok = proc.returncode == 0
    if ok:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        report.python, report.machine = info["python"], info["machine"]
        report.wheels = info["wheels"]
    note = "" if ok else last_line(proc.stderr)
    name = "import cv2, tensorflow, litert, mediapipe"
    report.steps.append(Step(name, ok, time.monotonic() - t0, note))


def run_pi_check(
    releases: list[str],
    cache: Path,
    shared: Path,
    *,
    fresh: bool = False,
    video_seconds: float | None = None,
) -> bool:
    """Every release's check and table; True when all passed."""
    piroot.ensure_emulation()
    reports = []
    for release in releases:
        print(f"pi-check {release} (host {platform.machine()}; logs in {cache / 'logs'})")
        reports.append(check_release(release, cache, inputs.Shared(shared), fresh, video_seconds))
        print(render(reports[-1]))
    return all(r.ok for r in reports)
