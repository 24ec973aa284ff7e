"""The node's side of federation: the MQTT client and its persistent SQLite outbox.

See :class:`edge_node.federation.client.FederationClient` for a usage example.
"""

from edge_node.federation.client import CentralModel, FederationClient, NodeUpdate
from edge_node.federation.outbox import Outbox

__all__ = ["CentralModel", "FederationClient", "NodeUpdate", "Outbox"]
