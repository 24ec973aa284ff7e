"""`make docker-demo`'s fault cases (``python -m training docker-faults``), in real containers on
the fleet's generated TLS/ACL config: the broker container runs ``init-fleet``'s mosquitto
drop-in (its listeners bound to 127.0.0.1), the aggregator container its ``aggregator.yaml`` (state in a host folder, so a restarted
container resumes), and each node container is ``python -m provisioning.picheck_node`` with its
``add-node`` files, sending its own update and keeping it and the central it gets.

* **restart**: ``docker restart`` of the aggregator after 2 of 4 updates; the central is bit for
  bit the one an uninterrupted aggregator computes from the same 4 updates (the mean, summed in
  node-id order, as tests/test_federation_faults.py checks for processes);
* **kill**: ``docker kill`` of the node container still holding back its update; the round
  closes at its deadline with its minimum of 3, and the central is the mean of the 3 that came.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import yaml

from training.sim.docker import IMAGES, container, docker, free_port
from training.sim.tls_fleet import bind_loopback
from vfer.ports import wait_port

NODES = ("n1", "n2", "n3", "n4")
CLASSES = ("happiness", "sadness", "anger", "neutral")


def make_fleet(root: Path) -> tuple[Path, int, int]:
    """A fleet folder (node files where they are) and v's first central; the broker's ports."""
    from provisioning.fleet import add_node, init_fleet
    from vfer import weights as wcodec
    from vfer.heads_spec import vfer_spec

    port, agg_port = free_port(), free_port()
    fleet = root / "fleet"
    init_fleet(fleet, broker_host="localhost", port=port, aggregator_port=agg_port,
               classes=CLASSES, deployment_context="research")  # fmt: skip
    for n in NODES:
        add_node(fleet, n, files_at=str(fleet / "nodes" / n), camera="file", kiosk=False)
    rng = np.random.default_rng(0)
    v = {}
    for name, ws in vfer_spec(len(CLASSES)).items():
        ones = name.endswith(("moving_variance", "gamma"))
        zeros = name.endswith(("moving_mean", "beta", "bias"))
        arr = (
            np.ones(ws.shape)
            if ones
            else np.zeros(ws.shape)
            if zeros
            else rng.normal(0, 0.05, ws.shape)
        )
        v[name] = arr.astype(np.float32)
    wcodec.save(root / "initial_v.safetensors", v)
    return fleet, port, agg_port


def start_broker(root: Path, fleet: Path, port: int, agg_port: int) -> None:
    """init-fleet's mosquitto config, its listeners bound to 127.0.0.1 (the host's network)."""
    conf = root / "mosquitto.conf"
    generated = (fleet / "broker" / "mosquitto.conf").read_text()
    conf.write_text("user root\n" + bind_loopback(generated, (port, agg_port)))
    docker("rm", "-f", container("fault-broker"), check=False)
    docker("run", "-d", "--name", container("fault-broker"), "--network", "host",
           "-v", f"{root}:{root}:ro", IMAGES["broker"], "-c", str(conf))  # fmt: skip
    wait_port(port, timeout=30.0, what="the broker container")
    wait_port(agg_port, timeout=30.0, what="the broker container")


def start_aggregator(root: Path, fleet: Path, round_cfg: dict[str, float]) -> str:
    cfg = yaml.safe_load((fleet / "aggregator" / "aggregator.yaml").read_text())
    cfg |= {
        "state_db": str(root / "aggregator.db"),
        "initial_weights": str(root / "initial_v.safetensors"),
        "round": {**round_cfg, "rounds": 1},
    }
    (root / "aggregator-run.yaml").write_text(yaml.safe_dump(cfg))
    cid = container("fault-aggregator")
    docker("rm", "-f", cid, check=False)
    docker("run", "-d", "--name", cid, "--network", "host", "--no-healthcheck", "-v", f"{root}:{root}",
           "--entrypoint", "python", IMAGES["aggregator"],
           "-m", "broker_aggregator", "run", "--config", str(root / "aggregator-run.yaml"))  # fmt: skip
    return cid


def start_node(root: Path, fleet: Path, node: str, seed: int, delay: float) -> str:
    cid = container(f"fault-{node}")
    docker("rm", "-f", cid, check=False)
    docker("run", "-d", "--name", cid, "--network", "host", "--no-healthcheck", "-v", f"{root}:{root}",
           "--entrypoint", "python", IMAGES["node"], "-m", "provisioning.picheck_node",
           "--config", str(fleet / "nodes" / node / "node.yaml"), "--seed", str(seed),
           "--delay", str(delay), "--timeout", "300", "--save", str(root / "out" / node))  # fmt: skip
    return cid


def logs(cid: str) -> str:
    import subprocess

    proc = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, check=False)
    return proc.stdout + proc.stderr


def wait_log(cid: str, text: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while logs(cid).count(text) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{cid}: no {count}x {text!r} in {timeout:.0f} s")
        time.sleep(1)


def wait_exit(cid: str, timeout: float) -> int:
    out = docker("wait", cid, timeout=timeout)
    return int(out or 1)


def expected_central(root: Path, nodes: list[str]) -> dict[str, np.ndarray]:
    from vfer import weights as wcodec
    from vfer.fedavg import aggregate

    return aggregate(
        [(wcodec.load(root / "out" / n / "update.safetensors"), 1) for n in sorted(nodes)]
    )


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def run_case(root: Path, case: str) -> dict[str, object]:
    """One fault case in ``root`` (made fresh); what happened, and whether it passed."""
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    fleet, port, agg_port = make_fleet(root)
    started = [container("fault-broker")]
    t0 = time.monotonic()
    try:
        start_broker(root, fleet, port, agg_port)
        if case == "restart":
            result = _restart(root, fleet, started)
        else:
            result = _kill(root, fleet, started)
    finally:
        for cid in started:
            (root / f"{cid}.log").write_text(logs(cid))
            docker("rm", "-f", cid, check=False)
    return {"case": case, **result, "seconds": round(time.monotonic() - t0, 1)}


def _restart(root: Path, fleet: Path, started: list[str]) -> dict[str, object]:
    """4 updates, min = max = 4; the aggregator restarted after the first 2 arrived."""
    agg = start_aggregator(
        root, fleet, {"min_submissions": 4, "max_submissions": 4, "deadline_s": 600}
    )
    started.append(agg)
    delays = {"n1": 0.0, "n2": 0.0, "n3": 45.0, "n4": 45.0}
    nodes = [start_node(root, fleet, n, i + 1, delays[n]) for i, n in enumerate(NODES)]
    started += nodes
    wait_log(agg, " submitted", 2, timeout=300)
    docker("restart", "-t", "10", agg, timeout=120)
    codes = [wait_exit(cid, timeout=600) for cid in nodes]
    from vfer import weights as wcodec

    got = [
        wcodec.load(root / "out" / n / "central.safetensors")
        for n in NODES
        if (root / "out" / n / "central.safetensors").exists()
    ]
    want = expected_central(root, list(NODES))
    ok = codes == [0] * 4 and len(got) == 4 and all(same(c, want) for c in got)
    return {"node_exit_codes": codes, "centrals_received": len(got), "bit_for_bit": ok, "ok": ok}


def _kill(root: Path, fleet: Path, started: list[str]) -> dict[str, object]:
    """4 nodes, min 3, deadline 90 s; the one holding its update back is docker-killed."""
    agg = start_aggregator(
        root, fleet, {"min_submissions": 3, "max_submissions": 4, "deadline_s": 90}
    )
    started.append(agg)
    delays = {"n1": 0.0, "n2": 0.0, "n3": 0.0, "n4": 3600.0}
    nodes = {n: start_node(root, fleet, n, i + 1, delays[n]) for i, n in enumerate(NODES)}
    started += list(nodes.values())
    wait_log(agg, " submitted", 3, timeout=300)
    docker("kill", nodes["n4"])
    codes = [wait_exit(nodes[n], timeout=600) for n in ("n1", "n2", "n3")]
    from vfer import weights as wcodec

    got = [
        wcodec.load(root / "out" / n / "central.safetensors")
        for n in ("n1", "n2", "n3")
        if (root / "out" / n / "central.safetensors").exists()
    ]
    want = expected_central(root, ["n1", "n2", "n3"])
    ok = codes == [0] * 3 and len(got) == 3 and all(same(c, want) for c in got)
    return {
        "node_exit_codes": codes,
        "centrals_received": len(got),
        "mean_of_arrived": ok,
        "ok": ok,
    }
