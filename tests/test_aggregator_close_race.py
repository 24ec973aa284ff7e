"""An update stored just after the leader decided to close: the node hears 'round_closed', never
'stored', and the closing sums hold exactly the (node, seq) that were acknowledged as stored.

The leader and a worker run here as the real classes over real SQLite files (no broker): the
race is a matter of message order, which these tests set exactly.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np

from broker_aggregator.config import AggregatorConfig
from broker_aggregator.effects import Effect, LocalClose
from broker_aggregator.leader import Leader
from broker_aggregator.service import control_topics
from broker_aggregator.store import State
from broker_aggregator.validate import Expectations, inspect_update
from broker_aggregator.worker import Worker
from tests.support.aggregator import personalized, random_v
from vfer import weights as wcodec
from vfer.classes import EMOTIONS_6
from vfer.fedavg import RunningSum
from vfer.heads_spec import vfer_spec
from vfer.messages import (
    AckMsg,
    CloseMsg,
    PartialHeader,
    Personalization,
    ProgressMsg,
    RoundMsg,
    UpdateHeader,
    pack,
)
from vfer.topics import Topics

TOPICS = Topics("fedvfer")


def progress(node: str, seq: int, worker: str = "agg-2") -> ProgressMsg:
    return ProgressMsg(
        node_id=node, worker_id=worker, round_id=1, seq=seq, update_id=f"{node}-update-{seq}"
    )


def leader_with_open_round(tmp_path: Path) -> tuple[Leader, State, list[CloseMsg]]:
    initial = tmp_path / "v.safetensors"
    wcodec.save(initial, random_v(6, np.random.default_rng(0)))
    cfg = AggregatorConfig(
        insecure_unsigned=True,
        state_db=tmp_path / "agg.db",
        round={"min_submissions": 2, "max_submissions": 2, "deadline_s": 3600},  # type: ignore[arg-type]
    )
    state = State(cfg.state_db)
    leader = Leader(cfg, state, TOPICS, None, control_topics(TOPICS))
    closes = _closes(leader.start(str(initial)))
    return leader, state, closes


def _closes(effects: list[Effect]) -> list[CloseMsg]:
    return [e.close for e in effects if isinstance(e, LocalClose)]


def answer(leader: Leader, state: State, *msgs: ProgressMsg) -> list[AckMsg | None]:
    state.begin()
    acks = [leader.on_progress(m) for m in msgs]
    state.commit()
    return acks


def test_an_update_stored_after_the_close_decision_is_told_round_closed(tmp_path: Path) -> None:
    leader, state, closes = leader_with_open_round(tmp_path)
    try:
        first = answer(leader, state, progress("pi-1", 1), progress("pi-2", 1))
        assert [a.status for a in first if a] == ["stored", "stored"]
        assert not closes
        closes += _closes(leader.tick(time.time()))  # max_submissions reached: close
        assert closes and closes[-1].assignments == {"agg-2": {"pi-1": 1, "pi-2": 1}}
        # agg-2 stored these before the close reached it, and reports them now
        late, newer, resend = answer(
            leader, state, progress("pi-3", 1), progress("pi-1", 2), progress("pi-2", 1)
        )
        assert late is not None and (late.status, late.reason) == ("rejected", "round_closed")
        assert newer is not None and (newer.status, newer.reason) == ("rejected", "round_closed")
        assert resend is not None and resend.status == "stored"  # it counts: say so again
        assert state.accepted(1) == {"pi-1": ("agg-2", 1), "pi-2": ("agg-2", 1)}
        assert closes[-1].assignments == {"agg-2": {"pi-1": 1, "pi-2": 1}}
    finally:
        state.close()


def test_while_open_a_newer_update_replaces_and_an_older_one_is_a_replay(tmp_path: Path) -> None:
    leader, state, _ = leader_with_open_round(tmp_path)
    try:
        a1, a2, old = answer(
            leader, state, progress("pi-1", 1), progress("pi-1", 3), progress("pi-1", 2)
        )
        assert a1 is not None and a2 is not None and (a1.status, a2.status) == ("stored", "stored")
        assert old is not None and (old.status, old.reason) == ("rejected", "replay")
        assert state.accepted(1) == {"pi-1": ("agg-2", 3)}
    finally:
        state.close()


def test_a_worker_sums_exactly_the_assigned_seq_not_a_newer_body(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = random_v(6, rng)
    state = State(tmp_path / "w.db")
    worker = Worker("agg-2", state, TOPICS, _expectations(), "mean")
    worker.on_central(1, base)
    worker.on_round(_round())
    sent = {seq: personalized(base, rng) for seq in (1, 2)}
    state.begin()
    for seq, w in sent.items():
        out = worker.handle_update(inspect_update(_update("pi-1", seq, w), "pi-1", worker.expect))
        assert isinstance(out, ProgressMsg) and out.seq == seq
    state.commit()
    try:
        result = worker.partial(CloseMsg(round_id=1, assignments={"agg-2": {"pi-1": 1}}))
        assert result is not None
        header, sums = result
        assert header.nodes == {"pi-1": 1} and sums.count == 1
        for name, arr in sent[1].items():
            np.testing.assert_array_equal(sums.sums[name], arr.astype(np.float64), err_msg=name)
    finally:
        state.close()


def test_partial_sums_from_a_worker_that_was_assigned_nothing_are_ignored(
    tmp_path: Path,
) -> None:
    """They once sat among the partials and made every closing tick raise (a KeyError on the
    worker's assignment), so the round never finished."""
    rng = np.random.default_rng(2)
    leader, state, closes = leader_with_open_round(tmp_path)
    try:
        answer(leader, state, progress("pi-1", 1), progress("pi-2", 1))
        closes += _closes(leader.tick(time.time()))
        assert closes[-1].assignments == {"agg-2": {"pi-1": 1, "pi-2": 1}}
        sums = {n: a.astype(np.float64) for n, a in personalized(random_v(6, rng), rng).items()}
        stray = PartialHeader(worker_id="agg-9", round_id=1, nodes={"pi-1": 1}, total_weight=1.0)
        assert leader.on_partial(stray, RunningSum(sums, 1.0, 1)) == []
        assert state.current_round().state == "closing"  # type: ignore[union-attr]
        mine = PartialHeader(
            worker_id="agg-2", round_id=1, nodes={"pi-1": 1, "pi-2": 1}, total_weight=2.0
        )
        doubled = {n: 2 * a for n, a in sums.items()}
        leader.on_partial(mine, RunningSum(doubled, 2.0, 2))
        finished = state.db.execute("SELECT state, num_submissions FROM rounds WHERE round_id=1")
        assert finished.fetchone() == ("finished", 2)
    finally:
        state.close()


def _expectations() -> Expectations:
    return Expectations(vfer_spec(6), tuple(EMOTIONS_6), 4_000_000, 1000.0, 100.0)


def _round() -> RoundMsg:
    return RoundMsg(
        round_id=1,
        base_version=1,
        opened_at=0.0,
        deadline=1e12,
        min_submissions=1,
        max_submissions=9,
        classes=list(EMOTIONS_6),
        personalization=Personalization(),
    )


def _update(node: str, seq: int, weights: dict[str, np.ndarray]) -> bytes:
    header = UpdateHeader(
        node_id=node,
        round_id=1,
        base_version=1,
        update_id=uuid.uuid4().hex,
        seq=seq,
        created_at=0.0,
        clips_per_class={"anger": 1},
    )
    return pack(header, wcodec.to_bytes(weights))


def test_a_counted_update_is_answered_stored_in_every_round_state_and_after_a_restart(
    tmp_path: Path,
) -> None:
    leader, state, _ = leader_with_open_round(tmp_path)
    try:
        first = answer(leader, state, progress("pi-1", 1), progress("pi-2", 1))
        assert [a.status for a in first if a] == ["stored", "stored"]
        leader.tick(time.time())  # closing
        resend = lambda: answer(leader, state, progress("pi-1", 1))[0]  # noqa: E731
        assert state.current_round().state == "closing"  # type: ignore[union-attr]
        assert resend() == first[0]
        acks = leader.counted_acks()  # what a restart while closing sends again
        assert sorted(a.node_id for a in acks) == ["pi-1", "pi-2"]
        assert all(a.status == "stored" for a in acks)
        # round 1 finishes (as its close would, with agg-2's sum) and round 2 opens
        state.finish_round(1, 1, time.time(), 2, None)
        state.open_round(2, 1, time.time(), time.time() + 60)
        # a resend from a finished round, from a restarted leader over the same state db
        again = Leader(leader.cfg, state, TOPICS, None, control_topics(TOPICS))
        late = ProgressMsg(
            node_id="pi-1",
            worker_id="agg-2",
            round_id=1,
            seq=1,
            update_id="pi-1-update-1",
            reason="wrong_round",
        )
        state.begin()
        ack = again.on_progress(late)
        other = again.on_progress(late.model_copy(update={"node_id": "pi-3"}))
        state.commit()
        assert ack is not None and (ack.status, ack.reason) == ("stored", None)
        assert other is not None and (other.status, other.reason) == ("rejected", "wrong_round")
        assert state.rejections() == {"wrong_round": 1}  # the duplicate is not a rejection
        # answers are kept for the last five finished rounds, then forgotten
        for r in range(2, 8):
            state.finish_round(r, 1, time.time(), 0, None)
        state.begin()
        ack = again.on_progress(late)
        state.commit()
        assert ack is not None and ack.reason == "wrong_round"
    finally:
        state.close()
