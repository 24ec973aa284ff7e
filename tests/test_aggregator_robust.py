"""Issue 14, 'Why' 6 and the robust rules on a real aggregator and mosquitto: one node shifts an
output bias by 99 (inside max_update_norm). Under 'mean' the central moves by 99/N; under
'median', 'trimmed_mean' and 'krum' it equals the numpy oracle over what was sent and the
shift is gone. Sample weighting with max_weight_share caps a node claiming huge clip counts.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from broker_aggregator.robust import capped_factors
from tests.support.aggregator import AggregatorProcess, personalized, stored_central
from tests.support.mosquitto import Broker
from tests.support.raw_node import RawNode, subscriptions, update_frame, wait_subscribed
from tests.test_federation_e2e import broker, fleet  # noqa: F401
from vfer import weights as wcodec
from vfer.messages import CentralHeader

pytestmark = pytest.mark.slow

W = dict[str, np.ndarray]
BIAS = "v_out.bias"


def run_round(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp: Path,
    extra_yaml: str,
    sends: list[tuple[W, dict[str, int]]],
) -> tuple[CentralHeader, W, str]:
    cfg = tmp / "aggregator.yaml"
    n = len(sends)
    cfg.write_text(
        f"broker_url: {broker.url}\nsigning_key_file: {fleet['priv']}\n"
        f"initial_weights: {fleet['initial']}\nstate_db: {tmp / 'agg.db'}\n{extra_yaml}"
        f"round: {{min_submissions: {n}, max_submissions: {n}, rounds: 1, deadline_s: 120}}\n"
    )
    nodes = [RawNode(broker, f"pi-{i}") for i in range(n)]
    before = subscriptions(broker)
    agg = AggregatorProcess(["--config", str(cfg)], tmp / "agg.log").start()
    try:
        assert wait_subscribed(broker, before), agg.log()[-2000:]
        for node, (w, clips) in zip(nodes, sends, strict=True):
            uid = uuid.uuid4().hex
            node.publish(update_frame(node.node_id, 1, 1, 1, w, uid, clips_per_class=clips))
            ack = node.wait_ack(uid)
            assert ack is not None and ack.status == "stored", agg.log()[-2000:]
        assert agg.wait(timeout=30) == 0, agg.log()[-2000:]
    finally:
        for node in nodes:
            node.stop()
        agg.stop()
    header, central = stored_central(tmp / "agg.db", 2)
    return header, central, agg.log()


def honest_and_one_poisoner(fleet: dict[str, Path], n: int = 5) -> list[W]:  # noqa: F811
    base = {k: v for k, v in wcodec.load(fleet["initial"]).items() if "moving" not in k}
    rng = np.random.default_rng(11)
    sent = [personalized(base, rng) for _ in range(n)]
    sent[0][BIAS] = sent[0][BIAS].copy()
    sent[0][BIAS][2] += 99.0  # "fear" for every face, inside max_update_norm (100)
    return sent


def oracle(rule: str, sent: list[W]) -> W:
    out = {}
    for name in sent[0]:
        stack = np.stack([s[name].astype(np.float64) for s in sent])
        if rule == "median":
            out[name] = np.median(stack, axis=0).astype(np.float32)
        elif rule == "trimmed_mean":
            out[name] = stats.trim_mean(stack, 0.2, axis=0).astype(np.float32)
    return out


@pytest.mark.parametrize("rule", ["mean", "median", "trimmed_mean", "krum"])
def test_each_rule_on_a_real_round_with_one_bias_poisoner(
    rule: str,
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    sent = honest_and_one_poisoner(fleet)
    header, central, log = run_round(
        broker, fleet, tmp_path, f"rule: {rule}\n", [(w, {"anger": 3}) for w in sent]
    )
    honest_bias = np.mean([s[BIAS][2] for s in sent[1:]])
    shift = float(central[BIAS][2] - honest_bias)
    if rule == "mean":
        assert header.weighting == "mean" and shift == pytest.approx(99 / 5, abs=0.05)
        return
    assert header.weighting == rule and abs(shift) < 0.05, shift
    if rule == "krum":
        picked = next(line for line in log.splitlines() if "krum over 5 updates" in line)
        assert "'selected': 'pi-0'" not in picked
        chosen = int(picked.split("'selected': 'pi-")[1][0])
        for name, arr in central.items():
            np.testing.assert_array_equal(arr, sent[chosen][name], err_msg=name)
        return
    want = oracle(rule, sent)
    for name, arr in central.items():
        np.testing.assert_allclose(arr, want[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_samples_weighting_caps_a_node_claiming_many_clips(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    sent = honest_and_one_poisoner(fleet)
    clips = [{"anger": 10_000}] + [{"anger": 20, "fear": 10}] * 4
    _, central, _ = run_round(
        broker,
        fleet,
        tmp_path,
        "weighting: samples\nmax_weight_share: 0.2\n",
        list(zip(sent, clips, strict=True)),
    )
    factors = capped_factors({f"pi-{i}": float(sum(c.values())) for i, c in enumerate(clips)}, 0.2)
    weights = np.array([factors[f"pi-{i}"] for i in range(5)])
    assert weights[0] / weights.sum() == pytest.approx(0.2)
    for name, arr in central.items():
        want = np.average(
            np.stack([s[name].astype(np.float64) for s in sent]), axis=0, weights=weights
        )
        np.testing.assert_allclose(arr, want.astype(np.float32), rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_weight_cap_holds_across_two_workers(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The capped factors travel in the close: agg-2 sums its nodes with them, not its own."""
    sent = honest_and_one_poisoner(fleet, n=6)
    clips = [{"anger": 10_000}] + [{"anger": 30}] * 5
    cfg = tmp_path / "aggregator.yaml"
    cfg.write_text(
        f"broker_url: {broker.url}\nsigning_key_file: {fleet['priv']}\n"
        f"initial_weights: {fleet['initial']}\nstate_db: {tmp_path / 'agg.db'}\n"
        "weighting: samples\nmax_weight_share: 0.2\n"
        "round: {min_submissions: 6, max_submissions: 6, rounds: 1, deadline_s: 120}\n"
    )
    before = subscriptions(broker)
    worker = AggregatorProcess(
        ["--config", str(cfg), "--state-db", str(tmp_path / "w2.db"), "--worker-id", "agg-2"],
        tmp_path / "w2.log",
        command="worker",
    ).start()
    agg = AggregatorProcess(["--config", str(cfg)], tmp_path / "agg.log").start()
    nodes = [RawNode(broker, f"pi-{i}") for i in range(6)]
    try:
        assert wait_subscribed(broker, before + 1), agg.log()[-2000:] + worker.log()[-2000:]
        # pi-0 (the capped one) must be held by agg-2: resend it with a higher seq (a
        # replacement) until $share's round robin hands it to agg-2
        for seq in range(1, 5):
            uid = uuid.uuid4().hex
            nodes[0].publish(
                update_frame("pi-0", 1, 1, seq, sent[0], uid, clips_per_class=clips[0])
            )
            assert nodes[0].wait_ack(uid) is not None
            if "pi-0 submitted (via agg-2)" in agg.log():
                break
        assert "pi-0 submitted (via agg-2)" in agg.log(), agg.log()[-2000:]
        for node, w, c in list(zip(nodes, sent, clips, strict=True))[1:]:
            uid = uuid.uuid4().hex
            node.publish(update_frame(node.node_id, 1, 1, 1, w, uid, clips_per_class=c))
            ack = node.wait_ack(uid)
            assert ack is not None and ack.status == "stored", agg.log()[-2000:]
        assert agg.wait(timeout=30) == 0, agg.log()[-2000:]
    finally:
        for node in nodes:
            node.stop()
        agg.stop()
        worker.stop()
    log = agg.log()
    assert log.count("(via agg-1)") > 0 and log.count("(via agg-2)") > 0, log
    central = stored_central(tmp_path / "agg.db", 2)[1]
    factors = capped_factors({f"pi-{i}": float(sum(c.values())) for i, c in enumerate(clips)}, 0.2)
    weights = np.array([factors[f"pi-{i}"] for i in range(6)])
    assert weights[0] / weights.sum() == pytest.approx(0.2)
    for name, arr in central.items():
        want = np.average(
            np.stack([s[name].astype(np.float64) for s in sent]), axis=0, weights=weights
        )
        np.testing.assert_allclose(arr, want.astype(np.float32), rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_leader_says_when_trimmed_mean_trims_nothing(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """0.2 x 3 nodes trims 0 each end: the plain mean, said once at start (issue 23, item 2)."""
    sent = honest_and_one_poisoner(fleet, n=3)
    _, _, log = run_round(
        broker, fleet, tmp_path, "rule: trimmed_mean\n", [(w, {"anger": 3}) for w in sent]
    )
    assert "trims nothing at 3 submissions: it is the plain mean" in log, log[-2000:]
