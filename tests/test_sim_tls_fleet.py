"""The simulation's provisioned fleet (training.sim.tls_fleet; `simulate --tls-fleet`, `make
docker-demo`): the configs the simulation writes for its nodes, its aggregator and its observer
log in to a real mosquitto running the generated TLS/ACL config, and each may do only its part."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker_aggregator.config import load_aggregator_config
from edge_node.config import NodeConfig
from tests.support.mosquitto import mosquitto_binary
from tests.support.provisioning_mqtt import TIMEOUT, Client, connect
from training.sim.node import node_config
from training.sim.observer import FleetObserver
from training.sim.setup import PROFILES, Plan, _write_aggregator_yaml, slot_dir
from training.sim.tls_fleet import (
    FleetMosquitto,
    SimFleet,
    bind_loopback,
    free_ports,
    make_sim_fleet,
    node_id,
)
from vfer.classes import EMOTIONS_6
from vfer.config_io import validate_model
from vfer.messages import Personalization, RoundMsg, StatusMsg, to_json

NOT_AUTHORIZED = 135  # PUBACK's reason code for a publish the ACL refuses
ACCEPTED = (0, 16)  # PUBACK: success, or success with no subscriber to deliver to


@dataclass
class Running:
    sim: Path
    fleet: SimFleet


def write_sim(sim: Path, nodes: int, broker: str, tls_fleet: bool) -> None:
    """The parts of a simulation folder that the node's and aggregator's configs read."""
    plan = Plan(nodes, 2, EMOTIONS_6, 0, "tiny", broker, tls_fleet)
    sim.mkdir(parents=True, exist_ok=True)
    (sim / "plan.json").write_text(json.dumps(plan.to_json()))
    for i in range(nodes):
        slot_dir(sim, i).mkdir(parents=True)
        (slot_dir(sim, i) / "slot.json").write_text(json.dumps({"node_id": node_id(i)}))


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not installed (make system-deps installs it)")
    sim = tmp_path / "sim"
    fleet = make_sim_fleet(sim, 2, EMOTIONS_6, free_ports(3))
    write_sim(sim, 2, fleet.node_url, tls_fleet=True)
    broker = FleetMosquitto(fleet, tmp_path / "mosquitto.log").start()
    try:
        yield Running(sim, fleet)
    finally:
        broker.stop()


def sim_node(r: Running, slot: int, tmp_path: Path) -> Client:
    """Connect as the simulation's node.yaml says (validated by the node's own model)."""
    data = node_config(r.sim, slot, tmp_path / f"work-{slot}", r.fleet.node_url, "face.tflite")
    fed = validate_model(NodeConfig, data, source="sim node.yaml").federation
    assert fed.username == node_id(slot) and fed.mqtt_version == "5"
    assert fed.password_file is not None and fed.ca_file is not None
    port = int(fed.broker_url.rsplit(":", 1)[1])
    assert fed.broker_url.startswith("mqtts://") and port == r.fleet.port
    return connect(port, fed.username, fed.password_file.read_text().strip(), fed.ca_file,
                   client_id=node_id(slot))  # fmt: skip


def sim_aggregator(r: Running, tmp_path: Path) -> Client:
    """Connect as the simulation's aggregator.yaml says (validated by the aggregator's model)."""
    _write_aggregator_yaml(r.sim, tmp_path / "bundle", EMOTIONS_6, 2, 2, r.fleet.node_url,
                           PROFILES["tiny"], tls_fleet=True)  # fmt: skip
    cfg = load_aggregator_config(r.sim / "aggregator.yaml")
    assert cfg.password_file is not None and cfg.ca_file is not None and cfg.username
    assert cfg.broker_url == r.fleet.aggregator_url
    assert cfg.signing_key_file == r.fleet.dir / "aggregator" / "signing_key.pem"
    return connect(r.fleet.aggregator_port, cfg.username, cfg.password_file.read_text().strip(),
                   cfg.ca_file, client_id="fedvfer-test-leader")  # fmt: skip


def round_msg() -> bytes:
    now = time.time()
    return to_json(RoundMsg(round_id=1, base_version=1, opened_at=now, deadline=now + 60,
                            min_submissions=1, max_submissions=2, classes=list(EMOTIONS_6),
                            personalization=Personalization()))  # fmt: skip


def status(node: str) -> bytes:
    return to_json(StatusMsg(node_id=node, state="online"))


def test_nodes_aggregator_and_observer_log_in_with_the_sim_configs_and_do_only_their_part(
    running: Running, tmp_path: Path
) -> None:
    fleet = running.fleet
    key = fleet.dir / "fleet_public_key.pem"
    node, other, agg = sim_node(running, 0, tmp_path), sim_node(running, 1, tmp_path), None
    try:
        assert (node.connect_rc, other.connect_rc) == (0, 0)
        agg = sim_aggregator(running, tmp_path)
        assert agg.connect_rc == 0
        with FleetObserver(fleet.observer_url, key, **fleet.observer_login()) as observer:
            # the aggregator opens a round, node-1 says it is online: the observer sees both
            assert agg.publish("fedvfer/round", round_msg(), retain=True) in ACCEPTED
            assert (
                node.publish("fedvfer/nodes/node-1/status", status("node-1"), retain=True)
                in ACCEPTED
            )
            with observer.cond:
                seen = observer.cond.wait_for(
                    lambda: (
                        observer.seen.rounds.get(1) == "open"
                        and observer.seen.status.get("node-1") == "online"
                    ),
                    TIMEOUT,
                )
            assert seen, observer.snapshot()
        # a node writes its own subtree only: not the round, not another node's update
        assert node.publish("fedvfer/round", round_msg()) == NOT_AUTHORIZED
        assert node.publish("fedvfer/nodes/node-2/update") == NOT_AUTHORIZED
        assert other.publish("fedvfer/nodes/node-2/update") in ACCEPTED
    finally:
        for c in (node, other, agg):
            if c is not None:
                c.stop()


def test_the_observer_reads_rounds_and_status_and_writes_nothing(
    running: Running, tmp_path: Path
) -> None:
    fleet = running.fleet
    login = fleet.observer_login()
    obs = connect(fleet.observer_port, login["username"], login["password"], fleet.ca_file,
                  client_id="test-observer")  # fmt: skip
    node = sim_node(running, 0, tmp_path)
    try:
        assert (obs.connect_rc, node.connect_rc) == (0, 0)
        assert obs.publish("fedvfer/round", round_msg()) == NOT_AUTHORIZED
        assert obs.publish("fedvfer/central/bundle") == NOT_AUTHORIZED
        assert obs.publish("fedvfer/nodes/node-1/status", status("node-1")) == NOT_AUTHORIZED
        assert obs.publish("fedvfer/nodes/observer/update") == NOT_AUTHORIZED
        # mosquitto does not check subscriptions, only delivery: the node's update never comes,
        # its status (sent after it, delivered in order) does
        obs.subscribe("fedvfer/nodes/node-1/update", "fedvfer/nodes/node-1/status")
        assert node.publish("fedvfer/nodes/node-1/update", b"weights") in ACCEPTED
        assert node.publish("fedvfer/nodes/node-1/status", status("node-1")) in ACCEPTED
        topic, _ = obs.next_message()
        assert topic == "fedvfer/nodes/node-1/status"
    finally:
        obs.stop()
        node.stop()


def test_each_login_works_on_its_own_listener_only(running: Running, tmp_path: Path) -> None:
    fleet = running.fleet
    login = fleet.observer_login()
    node_pw = (fleet.dir / "nodes" / "node-1" / "broker_password").read_text().strip()
    agg_pw = (fleet.dir / "aggregator" / "password").read_text().strip()
    wrong = [
        (fleet.port, "observer", login["password"]),  # the nodes' listener
        (fleet.aggregator_port, "observer", login["password"]),
        (fleet.observer_port, "node-1", node_pw),
        (fleet.observer_port, "aggregator", agg_pw),
        (fleet.aggregator_port, "node-1", node_pw),
        *((port, None, None) for port in fleet.ports),  # anonymous
    ]
    for port, user, password in wrong:
        c = connect(port, user, password, fleet.ca_file, client_id="test-wrong")
        try:
            assert c.connect_rc not in (None, 0), (port, user)
        finally:
            c.client.loop_stop()


def test_the_broker_runs_the_generated_config_bound_to_loopback(tmp_path: Path) -> None:
    fleet = make_sim_fleet(tmp_path / "sim", 3, EMOTIONS_6, (18831, 18832, 18833))
    conf = fleet.broker_conf.read_text()
    listeners = [line for line in conf.splitlines() if line.startswith("listener ")]
    assert listeners == [f"listener {p} 127.0.0.1" for p in fleet.ports]
    generated = (fleet.broker_dir / "mosquitto.conf").read_text()
    # everything else is init-fleet's, line for line
    assert bind_loopback(generated, fleet.ports[:2]) in conf
    assert sorted(p.name for p in (fleet.dir / "nodes").iterdir()) == [
        "node-1",
        "node-2",
        "node-3",
    ]
    with pytest.raises(ValueError, match="listener 1"):
        bind_loopback(generated, (1,))


def test_the_plain_sim_node_stays_anonymous(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    write_sim(sim, 1, "mqtt://127.0.0.1:1883", tls_fleet=False)
    anonymous = {
        "enabled": True,
        "broker_url": "mqtt://127.0.0.1:1883",
        "fleet_public_key": str((sim / "fleet" / "fleet_public_key.pem").resolve()),
        "mqtt_version": "auto",
    }
    data = node_config(sim, 0, tmp_path / "work", "mqtt://127.0.0.1:1883", "face.tflite")
    assert data["federation"] == anonymous
    # a plan.json written before tls_fleet existed reads as plain
    plan = json.loads((sim / "plan.json").read_text())
    assert plan.pop("tls_fleet") is False
    (sim / "plan.json").write_text(json.dumps(plan))
    data = node_config(sim, 0, tmp_path / "work", "mqtt://127.0.0.1:1883", "face.tflite")
    assert data["federation"] == anonymous


def test_sim_setup_with_tls_fleet_refuses_a_broker_before_making_anything(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from training.sim.cli import sim_setup_cmd

    sim = tmp_path / "sim"
    args = ["--sim-dir", str(sim), "--tls-fleet", "--broker", "mqtt://127.0.0.1:1883"]
    result = CliRunner().invoke(sim_setup_cmd, args)
    assert result.exit_code == 2 and "leave out --broker" in result.output
    assert not sim.exists()


def test_the_secure_demo_configures_secure_aggregation_for_every_node(tmp_path: Path) -> None:
    """`make demo SECURE=1`: the aggregator's secure section (one group of all the nodes) and
    every node's identity files, each accepted by its own config model."""
    from training.sim.setup import SECURE_GROUP

    sim = tmp_path / "sim"
    fleet = make_sim_fleet(sim, SECURE_GROUP, EMOTIONS_6, free_ports(3))
    write_sim(sim, SECURE_GROUP, fleet.node_url, tls_fleet=True)
    _write_aggregator_yaml(sim, tmp_path / "bundle", EMOTIONS_6, SECURE_GROUP, 2, fleet.node_url,
                           PROFILES["tiny"], tls_fleet=True, secure=True)  # fmt: skip
    cfg = load_aggregator_config(sim / "aggregator.yaml")
    secure = cfg.secure_aggregation
    assert secure is not None and secure.min_group_size == SECURE_GROUP
    assert secure.vouching_public_key.is_file()
    assert cfg.round.min_submissions == SECURE_GROUP  # every node joins the one group
    for slot in range(SECURE_GROUP):
        data = node_config(sim, slot, tmp_path / f"w{slot}", fleet.node_url, "face.tflite")
        fed = validate_model(NodeConfig, data, source="sim node.yaml").federation
        assert fed.identity_key_file is not None and fed.identity_key_file.is_file()
        assert fed.identity_voucher_file is not None and fed.identity_voucher_file.is_file()
        assert fed.vouching_public_key is not None
        assert fed.vouching_public_key.read_bytes() == secure.vouching_public_key.read_bytes()


def test_the_secure_demo_refuses_too_few_nodes_or_a_plain_broker(tmp_path: Path) -> None:
    from training.sim.setup import SECURE_GROUP, setup
    from vfer.cli import UserError

    for nodes, tls in ((SECURE_GROUP - 1, True), (SECURE_GROUP, False)):
        with pytest.raises(UserError, match="secure aggregation needs"):
            setup(tmp_path / "sim", nodes=nodes, rounds=2, broker="mqtt://127.0.0.1:1",
                  profile_name="tiny", tls_fleet=tls, secure=True)  # fmt: skip
