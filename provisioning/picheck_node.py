"""The node's side of ``make pi-check``'s federation round, run inside the arm64 root:
``python -m provisioning.picheck_node --config /etc/fedvfer/node.yaml``.

With the generated node.yaml (TLS, the node's broker login, the fleet's public key) it waits
for the aggregator's round and signed central, submits that central moved a little (what
on-device fine-tuning looks like), and waits for the ack and the next central. Prints one JSON
line; exit status 1 when any of it does not come. The Docker fleet's fault cases
(`make docker-demo`, training/sim/docker_faults.py) run it as their node containers: ``--seed``
makes each node's update its own, ``--delay`` holds it back, ``--save`` keeps the update sent and
the central received so the host can check the central against the updates that arrived.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
import numpy as np

if TYPE_CHECKING:
    from edge_node.federation import FederationClient

TIMEOUT_S = 600.0  # emulated TLS and signature checks are slow


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path))
@click.option("--timeout", default=TIMEOUT_S, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int, help="the update's random move")
@click.option(
    "--delay", default=0.0, show_default=True, type=float, help="seconds before submitting"
)
@click.option(
    "--save", type=click.Path(path_type=Path, file_okay=False), help="keep update, central"
)
def main(config_path: Path, timeout: float, seed: int, delay: float, save: Path | None) -> None:
    """One federation round as this node."""
    from edge_node.config import load_node_config
    from edge_node.federation import FederationClient, NodeUpdate

    config = load_node_config(config_path)
    with tempfile.TemporaryDirectory() as tmp:
        client = FederationClient(config.node_id, config.federation, Path(tmp) / "outbox.db")
        client.start()
        try:
            rnd = client.wait_round(timeout=timeout)
            central = client.wait_central(timeout=timeout)
            if rnd is None or central is None:
                _fail("no round or no central from the aggregator")
            time.sleep(delay)
            rng = np.random.default_rng(seed)
            moved = {
                n: (a + rng.normal(0.0, 0.01, a.shape)).astype(np.float32)
                for n, a in central.weights.items()
            }
            counts = {central.classes[0]: 2}
            update = client.submit(NodeUpdate(rnd.round_id, rnd.base_version, moved, counts))
            ack = _settled(client, update, timeout)
            new = client.wait_central(timeout=timeout, newer_than=central.version)
        finally:
            client.stop()
    if save is not None:
        from vfer import weights as wcodec

        save.mkdir(parents=True, exist_ok=True)
        wcodec.save(save / "update.safetensors", moved)
        if new is not None:
            wcodec.save(save / "central.safetensors", new.weights)
    result = {"round": rnd.round_id, "ack": ack, "central": new.version if new else None}
    click.echo(json.dumps(result))
    if ack != "stored" or new is None:
        sys.exit(1)


def _fail(why: str) -> NoReturn:
    click.echo(json.dumps({"error": why}))
    sys.exit(1)


def _settled(client: FederationClient, update_id: str, timeout: float) -> str | None:
    """How the aggregator answered ``update_id`` ('stored', 'rejected', 'superseded'), read from
    the client's outbox as its thread settles it; None if still pending after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = client.outbox.status(update_id)
        if st is not None and st[0] != "pending":
            return str(st[0])
        time.sleep(0.05)
    return None


if __name__ == "__main__":
    main()
