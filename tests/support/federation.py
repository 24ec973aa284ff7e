"""Test helpers around the node's federation client (polling belongs to tests, not the node)."""

from __future__ import annotations

import time

from edge_node.federation import FederationClient


def wait_acked(client: FederationClient, update_id: str, timeout: float) -> str | None:
    """Poll the client's outbox until ``update_id`` is settled ('stored', 'rejected',
    'superseded'); None when it is still pending after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        st = client.outbox.status(update_id)
        if st is not None and st[0] != "pending":
            return st[0]
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)  # the outbox is settled by the client's own thread
