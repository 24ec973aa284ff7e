"""Mosquitto's files for the fleet, as pure text: password hashes, the password file, the ACL
and the broker config drop-in. Nothing here touches the disk or a broker.

Who may do what (``P`` is the topic prefix, ``fedvfer`` by default)::

    node X      write P/nodes/X/#            read P/round, P/central/#, P/nodes/X/ack,
                                                  P/secagg/groups, P/secagg/group/#,
                                                  P/secagg/nodes/X/#
    aggregator  write P/round, P/central/#, P/nodes/+/ack, P/secagg/#
                read  P/nodes/+/update, P/nodes/+/status (also as $share/<group>/...),
                      P/nodes/+/secagg
                both  P/aggregator/# (worker <-> leader control topics)

Identities are bound by listener (``per_listener_settings true``): nodes log in on the fleet
listener, whose password file holds only nodes and which replaces every client id by the user
name (``use_username_as_clientid``), so a node login can neither disconnect another client by
reusing its id nor resume another client's session. The aggregator logs in on its own listener,
whose password file holds only the aggregator, so its workers keep their own client ids.
Mosquitto's ``acl_file`` does not check subscriptions, so a node may subscribe to any
``$share/<group>/...``: the aggregators' group name is a per-fleet secret (:func:`new_share_group`)
written only into ``aggregator.yaml``; a node that subscribes to a group it guessed makes a group
of its own and takes nothing from the aggregators'.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
from dataclasses import dataclass

from vfer.heads_spec import count_params, ifer_spec, vfer_spec
from vfer.topics import Topics

AGGREGATOR_USER = "aggregator"
#: The aggregator's client ids are ``fedvfer-<worker id>``; no node may be named like that.
RESERVED_CLIENT_PREFIX = "fedvfer-"
#: Mosquitto 2's own default for ``mosquitto_passwd``.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
#: Mosquitto's default ``max_queued_messages``; above it QoS 1 messages are dropped silently.
MOSQUITTO_DEFAULT_QUEUE = 1000


def hash_password(
    password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """Mosquitto 2's ``$7$`` format: PBKDF2-HMAC-SHA512, 64-byte digest, base64 salt and hash."""
    if not password:
        raise ValueError("a broker password must not be empty")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def new_share_group() -> str:
    """A secret shared-subscription group name for the aggregators (128 random bits)."""
    return f"fedvfer-agg-{secrets.token_hex(16)}"


def new_password() -> str:
    """A random broker password (URL-safe, 192 bits)."""
    return secrets.token_urlsafe(24)


def password_file(hashes: dict[str, str]) -> str:
    """``user:hash`` lines, sorted by user; users must not contain ':' or whitespace."""
    lines = []
    for user in sorted(hashes):
        if not user or ":" in user or any(c.isspace() for c in user):
            raise ValueError(f"user name {user!r} cannot go in a mosquitto password file")
        lines.append(f"{user}:{hashes[user]}")
    return "\n".join(lines) + ("\n" if lines else "")


def acl_file(prefix: str) -> str:
    """The ACL: one ``user`` block for the aggregator, ``pattern`` lines (``%u``) for every node."""
    t = Topics(prefix)
    p = t.prefix
    return (
        "# fedvfer broker ACL, written by `python -m provisioning`; regenerate rather than edit.\n"
        "# Only the aggregator may write the round and central topics.\n"
        f"user {AGGREGATOR_USER}\n"
        f"topic write {t.round}\n"
        f"topic write {p}/central/#\n"
        f"topic write {p}/nodes/+/ack\n"
        f"topic read {t.all_updates}\n"
        f"topic read {t.all_status}\n"
        "# Its workers and leader talk among themselves here.\n"
        f"topic readwrite {p}/aggregator/#\n"
        "# Secure aggregation: the nodes' protocol messages in, the stage messages out.\n"
        f"topic read {t.all_secagg}\n"
        f"topic write {p}/secagg/#\n"
        "\n"
        "# Every authenticated client (each node's user name is its node id): its own subtree,\n"
        "# its own acks, the round and the central bundle. Patterns apply to all users.\n"
        f"pattern write {p}/nodes/%u/#\n"
        f"pattern read {p}/nodes/%u/ack\n"
        f"pattern read {t.round}\n"
        f"pattern read {p}/central/#\n"
        "# Secure aggregation: the groups, every group's public stage messages, its own shares.\n"
        f"pattern read {t.secagg_groups}\n"
        f"pattern read {t.all_secagg_groups}\n"
        f"pattern read {p}/secagg/nodes/%u/#\n"
    )


def packet_limit(max_classes: int = 8) -> int:
    """``max_packet_size`` for the fleet: room for g and v in float32 (a central bundle carries
    at most both heads), doubled for encoding and metadata, rounded up to whole MiB."""
    floats = (
        count_params(ifer_spec(max_classes))["total"]
        + count_params(vfer_spec(max_classes))["total"]
    )
    mib = 1 << 20
    return math.ceil(2 * 4 * floats / mib) * mib


def queue_limit(fleet_size: int) -> int:
    """``max_queued_messages``: the aggregator's session must hold an update, a status and a
    few retries from every node while it is offline; never below 10x mosquitto's default."""
    if fleet_size < 1:
        raise ValueError(f"fleet size must be at least 1, got {fleet_size}")
    return max(10 * MOSQUITTO_DEFAULT_QUEUE, 20 * fleet_size)


@dataclass(frozen=True)
class BrokerFiles:
    """Absolute paths of the broker's files as the broker host sees them."""

    dir: str

    def _at(self, name: str) -> str:
        return f"{self.dir.rstrip('/')}/{name}"

    @property
    def passwd(self) -> str:
        return self._at("passwd")

    @property
    def aggregator_passwd(self) -> str:
        return self._at("aggregator_passwd")

    @property
    def acl(self) -> str:
        return self._at("acl")

    @property
    def ca(self) -> str:
        return self._at("ca.crt")

    @property
    def cert(self) -> str:
        return self._at("server.crt")

    @property
    def key(self) -> str:
        return self._at("server.key")

    @property
    def crl(self) -> str:
        return self._at("crl.pem")


def mosquitto_conf(
    files: BrokerFiles,
    *,
    port: int = 8883,
    bind: str = "",
    fleet_size: int = 100,
    max_packet_size: int | None = None,
    client_certs: bool = False,
    aggregator_port: int = 8884,
) -> str:
    """A config drop-in (``conf.d/fedvfer.conf``): TLS on ``port`` for the nodes and on
    ``aggregator_port`` for the aggregator, each listener with its own password file (see the
    module docstring), no anonymous access, the ACL, packet and queue limits. With
    ``client_certs`` the node listener also requires a certificate from the fleet CA (checked
    against the CRL) and the aggregator's listener is bound to 127.0.0.1 (it has a password but
    no certificate, so it must run on the broker host)."""
    limit = max_packet_size or packet_limit()
    out = [
        "# fedvfer broker, written by `python -m provisioning`; regenerate rather than edit.\n"
        "# Persistence and logging stay in the main mosquitto.conf.\n"
        "# Each listener has its own password file: nodes cannot log in on the aggregator's.\n",
        "per_listener_settings true\n",
        f"max_packet_size {limit}\n",
        f"max_queued_messages {queue_limit(fleet_size)}\n",
        "persistent_client_expiration 30d\n",
        "# A kill -9 of the broker loses at most this many seconds (docs/mqtt.md, Durability).\n"
        "autosave_interval 30\n",
        "\n# Nodes over TLS; a node's client id is its user name, so nobody can take over another's.\n",
        _tls_listener(files, port, bind, files.passwd),
        "use_username_as_clientid true\n",
    ]
    if client_certs:
        out += [
            "require_certificate true\n",
            "use_identity_as_username false\n",
            f"crlfile {files.crl}\n",
        ]
    out += [
        "\n# The aggregator (leader and workers keep their own client ids), with its password only.\n",
        _tls_listener(
            files, aggregator_port, "127.0.0.1" if client_certs else bind, files.aggregator_passwd
        ),
    ]
    return "".join(out)


def _tls_listener(files: BrokerFiles, port: int, address: str, passwd: str) -> str:
    """One TLS listener with its own password file and the fleet's ACL, no anonymous access."""
    return (
        f"listener {port}{(' ' + address) if address else ''}\n"
        "protocol mqtt\n"
        f"cafile {files.ca}\n"
        f"certfile {files.cert}\n"
        f"keyfile {files.key}\n"
        "tls_version tlsv1.2\n"
        "allow_anonymous false\n"
        f"password_file {passwd}\n"
        f"acl_file {files.acl}\n"
    )
