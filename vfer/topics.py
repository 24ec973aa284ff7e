"""MQTT topic names of the federation protocol (docs/mqtt.md is the reference)."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "fedvfer"
PROTOCOL_VERSION = 1
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_node_id(node_id: str) -> str:
    """A node id is a topic level: letters, digits, '-' and '_', at most 64, no wildcards."""
    if not _NODE_ID.match(node_id):
        raise ValueError(
            f"node id {node_id!r} is not valid: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return node_id


@dataclass(frozen=True)
class Topics:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "#+") or self.prefix.endswith("/"):
            raise ValueError(
                f"topic prefix {self.prefix!r} must be non-empty, without # + or a trailing /"
            )

    @property
    def central_bundle(self) -> str:
        return f"{self.prefix}/central/bundle"

    @property
    def round(self) -> str:
        return f"{self.prefix}/round"

    def node_update(self, node_id: str) -> str:
        return f"{self.prefix}/nodes/{check_node_id(node_id)}/update"

    def node_ack(self, node_id: str) -> str:
        return f"{self.prefix}/nodes/{check_node_id(node_id)}/ack"

    def node_status(self, node_id: str) -> str:
        return f"{self.prefix}/nodes/{check_node_id(node_id)}/status"

    def node_secagg(self, node_id: str) -> str:
        """Every secure-aggregation message a node sends (docs/secure-aggregation.md)."""
        return f"{self.prefix}/nodes/{check_node_id(node_id)}/secagg"

    @property
    def all_secagg(self) -> str:
        return f"{self.prefix}/nodes/+/secagg"

    @property
    def secagg_groups(self) -> str:
        """The revealed seed and the groups (retained)."""
        return f"{self.prefix}/secagg/groups"

    def secagg_group(self, group_id: int, leaf: str) -> str:
        """A group's public stage message (retained): ``keys``, ``survivors``, ``unmask``."""
        return f"{self.prefix}/secagg/group/{int(group_id)}/{leaf}"

    @property
    def all_secagg_groups(self) -> str:
        return f"{self.prefix}/secagg/group/#"

    def secagg_shares(self, node_id: str) -> str:
        """The sealed shares addressed to one node (retained)."""
        return f"{self.prefix}/secagg/nodes/{check_node_id(node_id)}/shares"

    @property
    def all_updates(self) -> str:
        """Wildcard the aggregator subscribes to."""
        return f"{self.prefix}/nodes/+/update"

    @property
    def all_status(self) -> str:
        return f"{self.prefix}/nodes/+/status"

    def shared_updates(self, group: str) -> str:
        """MQTT 5 shared subscription so several aggregator workers split the updates."""
        return f"$share/{group}/{self.all_updates}"

    def node_of(self, topic: str) -> str | None:
        """The node id inside a ``<prefix>/nodes/<id>/<leaf>`` topic, or None."""
        parts = topic.split("/")
        pre = self.prefix.split("/")
        if len(parts) != len(pre) + 3 or parts[: len(pre)] != pre or parts[len(pre)] != "nodes":
            return None
        node = parts[len(pre) + 1]
        return node if _NODE_ID.match(node) else None
