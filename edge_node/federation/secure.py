"""The node's side of a secure round over MQTT: one :class:`vfer.secagg.NodeSession` per round,
its stage messages in, its answers out.

When the verified round message carries ``secure_aggregation``, the federation client hands
the update to :meth:`SecureParticipant.start` instead of its outbox: the move from the round's
base central (exactly what the plain path would send, minus the base) is clipped, quantized and
masked by the session, and only the masked vector leaves the node. Stage messages arrive on
``<prefix>/secagg/groups``, ``<prefix>/secagg/group/<g>/{keys,survivors,unmask}`` and
``<prefix>/secagg/nodes/<id>/shares`` (retained, QoS 1); each is checked against the fleet key,
answered by the session and the answer published on ``<prefix>/nodes/<id>/secagg``. A refused
message is logged with its reason and ignored (the session keeps waiting for the real one); a
message for a later stage waits until the earlier one was answered. The latest answer is sent
again after a reconnect (the aggregator takes a redelivery as no refusal). A node
restarted mid-round has lost its session: it is a dropout, the group goes on without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_node.config import FederationConfig
from vfer.envelope import MessageError, Signed, from_json, pack, to_json, verify_message
from vfer.heads_spec import WeightSpec
from vfer.messages import RoundMsg
from vfer.secagg import NodeSession, SecAggError, Voucher, flatten, load_identity, load_voucher
from vfer.secagg.wire import GroupsMsg, KeysBroadcast, SharesForYou, SurvivorsMsg, UnmaskRequest
from vfer.signing import load_public_key
from vfer.topics import Topics

log = logging.getLogger(__name__)

#: group topic leaf -> (model, session method); in stage order after the groups.
_GROUP_LEAVES: dict[str, tuple[type[Signed], str]] = {
    "keys": (KeysBroadcast, "on_keys"),
    "survivors": (SurvivorsMsg, "on_survivors"),
    "unmask": (UnmaskRequest, "on_unmask"),
}


@dataclass(frozen=True)
class Identity:
    """What a node needs to take part: its identity key, its voucher, the vouching key."""

    key: Ed25519PrivateKey
    voucher: Voucher
    vouching: Ed25519PublicKey

    @classmethod
    def load(cls, settings: FederationConfig) -> Identity | None:
        """From node.yaml's files; None (the node sits secure rounds out) when not configured."""
        s = settings
        if s.identity_key_file is None or s.identity_voucher_file is None:
            return None
        if s.vouching_public_key is None:
            return None
        return cls(
            load_identity(s.identity_key_file),
            load_voucher(s.identity_voucher_file),
            load_public_key(s.vouching_public_key),
        )


class SecureParticipant:
    """One node's secure rounds (module docstring). Runs on the client's outbox thread."""

    def __init__(
        self,
        node_id: str,
        identity: Identity,
        topics: Topics,
        fleet_key: Ed25519PublicKey | None,
        publish: Callable[[str, bytes], bool],
        *,
        allow_unsigned: bool = False,
    ) -> None:
        self.node_id, self.identity, self.topics = node_id, identity, topics
        self._fleet, self._allow_unsigned = fleet_key, allow_unsigned
        self._publish = publish
        self._lock = threading.Lock()
        self.session: NodeSession | None = None
        self._update: tuple[np.ndarray, int] | None = None  # this round's move and clip count
        self._sent: list[tuple[str, bytes]] = []  # this round's answers, in order
        self._waiting: dict[str, tuple[str, Any]] = {}  # method -> (what, message)
        #: Refusals of stage messages by reason (a node's count, for tests and the log).
        self.refused: dict[str, int] = {}

    def subscriptions(self) -> list[str]:
        t = self.topics
        return [t.secagg_groups, t.all_secagg_groups, f"{t.prefix}/secagg/nodes/{self.node_id}/#"]

    def start(
        self,
        rnd: RoundMsg,
        weights: Mapping[str, np.ndarray],
        base: Mapping[str, np.ndarray],
        spec: Mapping[str, WeightSpec],
        clips: int,
    ) -> None:
        """Join ``rnd`` with the move from ``base`` (a new session replaces an older one)."""
        self._update = (flatten(weights, spec) - flatten(base, spec), max(1, clips))
        self._join(rnd)

    def _join(self, rnd: RoundMsg) -> None:
        assert rnd.secure_aggregation is not None and self._update is not None
        update, clips = self._update
        session = NodeSession(
            node_id=self.node_id, round_id=rnd.round_id, round_info=rnd.secure_aggregation,
            identity=self.identity.key, voucher=self.identity.voucher,
            vouching_public=self.identity.vouching, update=update, clips=clips,
        )  # fmt: skip
        with self._lock:
            self.session, self._sent, self._waiting = session, [], {}
            self._answer(to_json(session.join()))
        log.info("round %d: joined the secure round", rnd.round_id)

    def on_round(self, rnd: RoundMsg) -> None:
        """A verified round message: the same round reopened with a new seed commitment (every
        group was dropped, nothing revealed) is joined again with the same update."""
        s = self.session
        if s is None or rnd.round_id != s.round_id or rnd.state != "open":
            return
        if rnd.secure_aggregation is not None and rnd.secure_aggregation != s.info:
            log.info("round %d reopened with new groups: joining again", rnd.round_id)
            self._join(rnd)

    def resend(self) -> None:
        """After a reconnect: the latest answer again (earlier stages have moved on)."""
        with self._lock:
            if self._sent:
                self._publish(*self._sent[-1])

    def on_message(self, topic: str, payload: bytes) -> None:
        """A stage message (outbox thread); refused ones are logged and counted, never raised."""
        with self._lock:
            if self.session is None:
                return
            try:
                step = self._decode(topic, payload)
            except MessageError as exc:
                self._refused(topic, exc)
                return
            if step is None or step[1].round_id != self.session.round_id:
                return  # another round's retained message
            self._waiting[step[0]] = (topic, step[1])
            self._run_waiting()

    def _decode(self, topic: str, payload: bytes) -> tuple[str, Any] | None:
        t, leaf = self.topics, topic.rsplit("/", 1)[-1]
        model: type[Signed]
        if topic == t.secagg_groups:
            model, method = GroupsMsg, "on_groups"
        elif topic == t.secagg_shares(self.node_id):
            model, method = SharesForYou, "on_shares"
        elif topic.startswith(f"{t.prefix}/secagg/group/") and leaf in _GROUP_LEAVES:
            model, method = _GROUP_LEAVES[leaf]
        else:
            return None
        msg = from_json(payload, model)  # type: ignore[type-var]
        verify_message(msg, self._fleet, leaf, allow_unsigned=self._allow_unsigned)
        return method, msg

    def _run_waiting(self) -> None:
        """Answer every waiting message whose stage has come, in stage order."""
        assert self.session is not None
        progress = True
        while progress:
            progress = False
            for method, (topic, msg) in list(self._waiting.items()):
                try:
                    out = getattr(self.session, method)(msg)
                except SecAggError as exc:
                    if exc.reason == "wrong_stage":
                        continue  # its turn comes after an earlier stage's message
                    del self._waiting[method]
                    self._refused(topic, exc)
                    continue
                except (ValueError, KeyError) as exc:  # hostile input the checks missed
                    del self._waiting[method]
                    self._refused(topic, MessageError("malformed", f"{type(exc).__name__}: {exc}"))
                    continue
                del self._waiting[method]
                self._answer(pack(*out) if isinstance(out, tuple) else to_json(out))
                progress = True

    def _answer(self, payload: bytes) -> None:
        topic = self.topics.node_secagg(self.node_id)
        self._sent.append((topic, payload))
        self._publish(topic, payload)

    def _refused(self, topic: str, exc: MessageError) -> None:
        self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
        log.warning("refused %s: reason=%s (%s)", topic, exc.reason, exc.detail)
