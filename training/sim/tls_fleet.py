"""The simulation's fleet on the generated TLS/ACL config (``simulate --tls-fleet``, `make docker-demo`).

``SIM/fleet/`` is then a real fleet folder made by ``provisioning`` (:func:`init_fleet`, then
:func:`add_node` for ``node-1`` .. ``node-N``, the simulation's node ids): its CA, the broker's
TLS listeners with their password files and ACL, the aggregator's credentials and the fleet's
signing key, each node's password, CA and ``node.yaml``. The nodes' ``federation`` section and the
aggregator's config are taken from those files (:func:`node_federation`, :func:`aggregator_config`),
so a simulated node logs in exactly as a provisioned Pi does.

The broker runs ``init-fleet``'s mosquitto config with two changes, both here and nowhere else:

* every listener is bound to 127.0.0.1 (the containers use the host's network; no packet leaves
  the machine);
* a third TLS listener, on loopback, for the simulation's observer (:mod:`training.sim.observer`),
  which watches the rounds to know when the fleet is done. The fleet's ACL has no read-only role
  (a node login may write its own subtree, the aggregator writes the round), so the observer gets
  its own listener with its own password file, holding only ``observer``, and its own ACL: read
  the round, the central bundle and the nodes' status, write nothing. Neither the nodes' nor the
  aggregator's password file knows it.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vfer.ports import wait_port
from vfer.topics import Topics

log = logging.getLogger(__name__)

HOST = "localhost"  # the name in the broker's certificate; resolves to loopback here and in the containers
OBSERVER_USER = "observer"
BROKER_CONF = "sim-mosquitto.conf"  # in FLEET/broker/, beside the generated mosquitto.conf


def free_ports(n: int) -> tuple[int, ...]:
    """``n`` distinct free loopback ports (all held open while they are picked)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return tuple(int(s.getsockname()[1]) for s in socks)
    finally:
        for s in socks:
            s.close()


def node_id(slot: int) -> str:
    """The simulation's node id of ``slot`` (``slot.json`` and ``add-node`` both use it)."""
    return f"node-{slot + 1}"


@dataclass(frozen=True)
class SimFleet:
    """A simulation's provisioned fleet: where its files are and the broker's three ports."""

    dir: Path
    port: int  # the nodes' TLS listener
    aggregator_port: int  # the aggregator's TLS listener
    observer_port: int  # the observer's TLS listener (this module's own)

    @property
    def node_url(self) -> str:
        return f"mqtts://{HOST}:{self.port}"

    @property
    def aggregator_url(self) -> str:
        return f"mqtts://{HOST}:{self.aggregator_port}"

    @property
    def observer_url(self) -> str:
        return f"mqtts://{HOST}:{self.observer_port}"

    @property
    def broker_dir(self) -> Path:
        return self.dir / "broker"

    @property
    def broker_conf(self) -> Path:
        """The config the broker runs (the generated one, bound to loopback, plus the observer's)."""
        return self.broker_dir / BROKER_CONF

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca" / "ca.crt"

    @property
    def observer_password_file(self) -> Path:
        return self.dir / "observer" / "password"

    @property
    def ports(self) -> tuple[int, int, int]:
        return self.port, self.aggregator_port, self.observer_port

    def observer_login(self) -> dict[str, Any]:
        """``FleetObserver``'s keyword arguments: its user, password and the fleet's CA."""
        return {
            "username": OBSERVER_USER,
            "password": self.observer_password_file.read_text().strip(),
            "ca_file": self.ca_file,
        }


def make_sim_fleet(
    sim: Path,
    nodes: int,
    classes: tuple[str, ...],
    ports: tuple[int, ...],
) -> SimFleet:
    """``SIM/fleet``: ``init-fleet`` (broker ``localhost`` on ``ports``' first two), ``add-node``
    for every node, then the observer's login and the broker config the simulation runs."""
    from provisioning.fleet import add_node, init_fleet

    fleet = (sim / "fleet").resolve()
    port, agg_port, obs_port = ports  # nodes, aggregator, observer
    settings = init_fleet(fleet, broker_host=HOST, port=port, aggregator_port=agg_port,
                          fleet_size=max(nodes, 1), classes=classes,
                          deployment_context="research")  # fmt: skip
    for slot in range(nodes):
        name = node_id(slot)
        add_node(fleet, name, files_at=str(fleet / "nodes" / name), camera="file", kiosk=False)
    sf = SimFleet(fleet, port, agg_port, obs_port)
    _write_observer_files(sf, settings.topic_prefix)
    generated = (sf.broker_dir / "mosquitto.conf").read_text()
    conf = (
        "# The simulation's broker (training.sim.tls_fleet): init-fleet's mosquitto.conf bound to\n"
        "# 127.0.0.1, and the observer's read-only listener. As root, stay root: the fleet's\n"
        "# files are 0600 (a broker started by another user ignores this line).\n"
        "user root\n" + bind_loopback(generated, (port, agg_port)) + observer_listener(sf)
    )
    sf.broker_conf.write_text(conf)
    log.info("TLS/ACL fleet for %d nodes in %s (ports %d, %d, %d)", nodes, fleet, *sf.ports)
    return sf


def bind_loopback(conf: str, ports: tuple[int, ...]) -> str:
    """``conf`` with each ``listener PORT`` line bound to 127.0.0.1 (each must be there once)."""
    for port in ports:
        line = f"listener {port}\n"
        if conf.count(line) != 1:
            raise ValueError(f"the generated mosquitto.conf has no single {line.strip()!r} line")
        conf = conf.replace(line, f"listener {port} 127.0.0.1\n")
    return conf


def _write_observer_files(sf: SimFleet, prefix: str) -> None:
    from provisioning import mosquitto as mq
    from provisioning import pki

    password = mq.new_password()
    pki.write_private(sf.observer_password_file, (password + "\n").encode())
    hashed = {OBSERVER_USER: mq.hash_password(password)}
    pki.write_private(sf.broker_dir / "observer_passwd", mq.password_file(hashed).encode())
    (sf.broker_dir / "observer_acl").write_text(observer_acl(prefix))


def observer_acl(prefix: str) -> str:
    """The observer's whole ACL: read the round, the central bundle and node status; no writes."""
    t = Topics(prefix)
    return (
        "# The simulation's observer (training.sim.tls_fleet): watches the rounds, writes nothing.\n"
        f"user {OBSERVER_USER}\n"
        f"topic read {t.round}\n"
        f"topic read {t.prefix}/central/#\n"
        f"topic read {t.all_status}\n"
    )


def observer_listener(sf: SimFleet) -> str:
    """The observer's loopback TLS listener, with its own password file and ACL."""
    b = sf.broker_dir
    return (
        "\n# The simulation's observer: its own password file and a read-only ACL.\n"
        f"listener {sf.observer_port} 127.0.0.1\n"
        "protocol mqtt\n"
        f"cafile {b / 'ca.crt'}\n"
        f"certfile {b / 'server.crt'}\n"
        f"keyfile {b / 'server.key'}\n"
        "tls_version tlsv1.2\n"
        "allow_anonymous false\n"
        f"password_file {b / 'observer_passwd'}\n"
        f"acl_file {b / 'observer_acl'}\n"
    )


def node_federation(sim: Path, node: str) -> dict[str, Any]:
    """The ``federation`` section of ``add-node``'s ``node.yaml`` for ``node``: the broker's TLS
    URL, the node's user name, password file, CA, the fleet's public key, MQTT 5."""
    path = sim / "fleet" / "nodes" / node / "node.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no add-node files for {node} in this fleet") from None
    return dict(data["federation"])


def aggregator_config(sim: Path) -> dict[str, Any]:
    """``init-fleet``'s ``aggregator.yaml``: its own listener, credentials, CA, signing key."""
    return dict(yaml.safe_load((sim / "fleet" / "aggregator" / "aggregator.yaml").read_text()))


@dataclass
class FleetMosquitto:
    """Mosquitto on the host running :attr:`SimFleet.broker_conf`; stopped by its pid."""

    fleet: SimFleet
    log_path: Path
    kind: str = "mosquitto, TLS/ACL fleet"
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.fleet.node_url

    def start(self) -> FleetMosquitto:
        from training.sim.broker import mosquitto_binary

        binary = mosquitto_binary()
        if binary is None:
            from vfer.cli import UserError

            raise UserError("--tls-fleet needs mosquitto on PATH (apt-get install mosquitto)")
        with self.log_path.open("ab") as fh:
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.fleet.broker_conf)], stdout=fh, stderr=subprocess.STDOUT
            )
        try:
            for port in self.fleet.ports:
                wait_port(port, self._proc, timeout=15.0, what="the fleet's mosquitto")
        except BaseException:
            self.stop()
            raise
        log.info("broker: mosquitto on the fleet's config (pid %d)", self._proc.pid)
        return self

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
