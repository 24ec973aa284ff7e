"""`make docker-demo` (``python -m training docker-demo``): the demo's fleet in real containers.

The same run as ``make demo`` (:func:`training.sim.simulate.simulate`: setup, N nodes recording
their own synthetic person's clips, the aggregator, R rounds, the report in ``demo-output/``),
with every role in its own container from ``deploy/docker/``, on the fleet's generated TLS/ACL
config (``simulate(tls_fleet=True)``, training.sim.tls_fleet): the broker (Debian's mosquitto)
runs init-fleet's mosquitto config, the aggregator its fleet files (credentials, CA, signing key)
and each node container logs in with its own add-node credentials and CA. Containers use the
host's network and listen on 127.0.0.1 only, and see the simulation folder at the same absolute
path as the host, so the simulator's own commands run in them unchanged (``python -m training
sim-node ...``).

Images are built with ``--build-arg BASE=...``: ``python:3.11-slim-bookworm`` where a registry
answers, else a Debian Bookworm base made here with debootstrap and ``docker import``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from training.sim.tls_fleet import SimFleet
from vfer.ports import wait_port

REPO = Path(__file__).resolve().parents[2]
PREFIX = "fedvfer-demo"
IMAGES = {"broker": "fedvfer-broker", "aggregator": "fedvfer-aggregator", "node": "fedvfer-node"}


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}: {proc.stderr.strip()[-800:]}")
    return proc.stdout.strip()


def container(name: str) -> str:
    return f"{PREFIX}-{name}"


@dataclass
class DockerChildren:
    """:class:`training.sim.simulate.Children`'s interface over containers: ``start`` runs the
    child's argv in the node or aggregator image (``python`` for the host's interpreter), with
    the host's paths mounted at the same place; ``stop`` is ``docker stop``, ``dead`` reads the
    container's state, the log is ``docker logs --follow`` into the log file."""

    mounts: list[Path]
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, str] = field(default_factory=dict)  # name -> container
    logs: dict[str, Path] = field(default_factory=dict)
    _followers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], log_path: Path) -> None:
        image = IMAGES["aggregator"] if "broker_aggregator" in argv else IMAGES["node"]
        cid = container(name)
        docker("rm", "-f", cid, check=False)
        # the images' healthchecks watch the compose layout (/data, /state), not this one
        args = ["run", "-d", "--name", cid, "--network", "host", "--no-healthcheck"]
        args += ["--entrypoint", "python"]
        for m in self.mounts:
            args += ["-v", f"{m}:{m}"]
        for k, v in {"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **self.env}.items():
            args += ["-e", f"{k}={v}"]
        docker(*args, image, *argv[1:])
        self.procs[name] = cid
        self.logs[name] = log_path
        self.follow(name)

    def follow(self, name: str) -> None:
        with open(self.logs[name], "ab") as fh:
            cmd = ["docker", "logs", "--follow", self.procs[name]]
            self._followers.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT))

    def dead(self) -> dict[str, int]:
        out = {}
        for name, cid in self.procs.items():
            state = docker(
                "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", cid, check=False
            )
            running, _, code = state.partition(" ")
            if running == "false":
                out[name] = int(code or 1)
        return out

    def stop(self, names: list[str] | None = None, timeout: float = 30.0) -> None:
        chosen = [self.procs[n] for n in (names or list(self.procs)) if n in self.procs]
        if chosen:
            docker("stop", "-t", str(int(timeout)), *chosen, check=False, timeout=timeout + 60)
        if names is None:
            for f in self._followers:
                f.terminate()
                f.wait(timeout=10)

    def tail(self, name: str, lines: int = 15) -> str:
        p = self.logs.get(name)
        if p is None or not p.exists():
            return ""
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:])

    def remove(self) -> None:
        self.stop()
        for cid in self.procs.values():
            docker("rm", "-f", cid, check=False)


def build_images(base: str, log: Path) -> None:
    """The three images from deploy/docker/ on ``base`` (host network: apt and pip reach out)."""
    for role, image in IMAGES.items():
        dockerfile = REPO / "deploy" / "docker" / f"Dockerfile.{role}"
        cmd = ["docker", "build", "--network", "host", "--build-arg", f"BASE={base}"]
        cmd += ["-t", image, "-f", str(dockerfile), str(REPO)]
        with log.open("ab") as fh:
            subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT)


@dataclass
class FleetBrokerContainer:
    """The broker image running the simulation's provisioned fleet config
    (:attr:`training.sim.tls_fleet.SimFleet.broker_conf`: init-fleet's TLS listeners and ACL,
    bound to 127.0.0.1, and the observer's listener), the fleet's broker folder mounted read-only."""

    fleet: SimFleet
    log_path: Path  # the container's log, kept when it is removed
    kind: str = "mosquitto container, TLS/ACL fleet"

    @property
    def url(self) -> str:
        return self.fleet.node_url

    def start(self) -> FleetBrokerContainer:
        cid = container("broker")
        folder = self.fleet.broker_dir
        docker("rm", "-f", cid, check=False)
        docker("run", "-d", "--name", cid, "--network", "host", "-v", f"{folder}:{folder}:ro",
               IMAGES["broker"], "-c", str(self.fleet.broker_conf))  # fmt: skip
        try:
            for port in self.fleet.ports:
                wait_port(port, timeout=30.0, what="the broker container")
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; its log: {self.log_path}") from None
        return self

    def stop(self) -> None:
        cid = container("broker")
        proc = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, check=False)
        self.log_path.write_text(proc.stdout + proc.stderr)
        docker("rm", "-f", cid, check=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_docker_demo(
    nodes: int, rounds: int, out: Path, base: str, build: bool
) -> dict[str, object]:
    """Build (unless told not to), run the fleet in containers, and write the demo's report."""
    from training.experiments.setup import shared_models_dir
    from training.sim.simulate import simulate

    out = out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    if build:
        build_images(base, out / "logs" / "docker-build.log")
    work = (REPO / ".cache" / "sim" / "demo").resolve()
    work.mkdir(parents=True, exist_ok=True)
    models = shared_models_dir()
    mounts = [out, work, *([models.resolve()] if models else [])]
    children = DockerChildren(mounts)
    try:
        return simulate(nodes=nodes, rounds=rounds, broker=None, out=out, work=work,
                        children=children, tls_fleet=True,
                        fleet_broker=lambda fleet, logs: FleetBrokerContainer(fleet, logs / "broker.log").start())  # fmt: skip
    finally:
        children.remove()
