"""Issue 24, item 3: central DP-FedAvg on the aggregator (``central_privacy``).

The pure part is held to :mod:`vfer.privacy` (the same clipping and noise rule, the same
epsilon); a real round on a real aggregator and mosquitto shows the signed central carrying its
epsilon, a poisoner's pull bounded by the clip, and /metrics reading the budget.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from broker_aggregator.central_dp import CentralPrivacyConfig, clipped_noisy_mean, spent
from broker_aggregator.config import load_aggregator_config
from broker_aggregator.fleet_view import FleetCollector, StatusBook, read_state
from tests.support.mosquitto import Broker
from tests.test_aggregator_robust import BIAS, honest_and_one_poisoner, run_round
from tests.test_federation_e2e import broker, fleet  # noqa: F401
from vfer import signing
from vfer.config_io import ConfigError
from vfer.messages import CentralHeader, open_central
from vfer.privacy.central import central_epsilon, dp_fedavg
from vfer.topics import Topics

SHAPES = {"a": (3, 4), "b": (5,)}


def updates(n: int, seed: int = 0, scale: float = 1.0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {k: (rng.normal(0, scale, s)).astype(np.float32) for k, s in SHAPES.items()}
        for _ in range(n)
    ]


@contextmanager
def reader(rows: list[dict[str, np.ndarray]]) -> Iterator:
    def read(name: str, lo: int, hi: int) -> np.ndarray:
        return np.stack([r[name].ravel()[lo:hi] for r in rows])

    yield read


def test_the_blockwise_rule_is_the_mechanisms_rule() -> None:
    base = {k: np.full(s, 0.5, np.float32) for k, s in SHAPES.items()}
    heads = updates(6, scale=2.0)
    with reader(heads) as read:
        got, norms = clipped_noisy_mean(
            read, SHAPES, 6, base, clip=1.5, noise_multiplier=0.0, denominator=10.0,
            rng=np.random.default_rng(0), chunk=5,
        )  # fmt: skip
    want, released = dp_fedavg(
        base, heads, clip=1.5, noise_multiplier=0.0, expected_nodes=10,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    np.testing.assert_allclose(norms, released.norms_before, rtol=1e-12)
    for k in SHAPES:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)


def test_one_huge_update_moves_the_mean_by_at_most_clip_over_the_denominator() -> None:
    base = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    heads = updates(3, scale=0.0)
    heads[0]["a"][0, 0] = 1e6
    with reader(heads) as read:
        got, norms = clipped_noisy_mean(
            read, SHAPES, 3, base, clip=2.0, noise_multiplier=0.0, denominator=8.0,
            rng=np.random.default_rng(0),
        )  # fmt: skip
    assert norms[0] == pytest.approx(1e6)
    assert float(got["a"][0, 0]) == pytest.approx(2.0 / 8.0)


def test_the_noise_on_the_sum_has_std_z_times_clip() -> None:
    shapes = {"w": (200_000,)}
    base = {"w": np.zeros(200_000, np.float32)}
    rows = [{"w": np.zeros(200_000, np.float32)}]
    with reader(rows) as read:
        got, _ = clipped_noisy_mean(
            read, shapes, 1, base, clip=0.3, noise_multiplier=2.0, denominator=4.0,
            rng=np.random.default_rng(1),
        )  # fmt: skip
    assert float(np.std(got["w"].astype(np.float64) * 4.0)) == pytest.approx(0.6, rel=0.01)


def test_epsilon_composes_to_the_budget_over_its_rounds() -> None:
    cfg = CentralPrivacyConfig(epsilon=3.0, delta=1e-5, clip=1.0, expected_nodes=100, rounds=2)
    assert cfg.noise_multiplier == pytest.approx(1.97, abs=0.01)  # the closed form
    first = spent(cfg, None, clipped=1)
    second = spent(cfg, first, clipped=0)
    assert first.rounds == 1 and second.rounds == 2 and first.clipped == 1
    assert first.epsilon_round == pytest.approx(central_epsilon(cfg.noise_multiplier, 1, 1e-5))
    assert second.epsilon_total == pytest.approx(3.0, rel=1e-6)
    assert first.epsilon_total < second.epsilon_total


@pytest.mark.parametrize(
    ("yaml", "names"),
    [
        ("central_privacy: {epsilon: -1, clip: 1, expected_nodes: 10}", "epsilon"),
        ("central_privacy: {epsilon: 0, clip: 1, expected_nodes: 10}", "epsilon"),
        ("central_privacy: {epsilon: .nan, clip: 1, expected_nodes: 10}", "epsilon"),
        ("central_privacy: {epsilon: 1e9, clip: 1, expected_nodes: 10}", "epsilon"),
        ("central_privacy: {epsilon: 3, clip: 0, expected_nodes: 10}", "clip"),
        ("central_privacy: {epsilon: 3, clip: 1, expected_nodes: 10, delta: 0.2}", "delta"),
        ("central_privacy: {epsilon: 3, clip: 1, expected_nodes: 0}", "expected_nodes"),
        ("central_privacy: {epsilon: 3, clip: 1, expected_nodes: 10}\nrule: median", "rule"),
        ("central_privacy: {epsilon: 3, clip: 1, expected_nodes: 10}\nweighting: samples", "rule"),
        ("central_privacy: {epsilon: 3, clip: 1, expected_nodes: 10, rounds: 2}", "round.rounds"),
        (
            "central_privacy: {epsilon: 3, clip: 1, expected_nodes: 10}\n"
            "round: {rounds: 2, max_submissions: 11}",
            "expected_nodes",
        ),
    ],
)
def test_bad_privacy_settings_are_refused_naming_the_key(
    tmp_path: Path, yaml: str, names: str
) -> None:
    path = tmp_path / "aggregator.yaml"
    path.write_text(f"insecure_unsigned: true\n{yaml}\n")
    with pytest.raises(ConfigError) as err:
        load_aggregator_config(path)
    assert names in str(err.value) and "central_privacy" in str(err.value), str(err.value)


def test_a_central_without_dp_signs_what_it_signed_before() -> None:
    header = CentralHeader(version=2, round_id=1, classes=["a", "b"], created_at=1.0)
    assert b"privacy" not in header.signing_bytes()


@pytest.mark.slow
def test_a_real_round_publishes_a_noisy_central_with_its_epsilon_signed(
    broker: Broker,  # noqa: F811
    fleet: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    sent = honest_and_one_poisoner(fleet)  # pi-0 pulls one output bias by 99
    yaml = "central_privacy: {epsilon: 8, delta: 1e-5, clip: 2.0, expected_nodes: 5, rounds: 1}\n"
    header, central, log = run_round(
        broker, fleet, tmp_path, yaml, [(w, {"anger": 3}) for w in sent]
    )
    privacy = header.privacy
    assert privacy is not None and privacy.rounds == 1 and privacy.clipped >= 1
    assert privacy.epsilon_total == pytest.approx(8.0, rel=1e-6)
    assert "epsilon_total" in log
    # the signature covers it: the fleet key verifies the frame, and a changed epsilon fails
    frame_header, _ = open_central(_latest_frame(tmp_path), signing.load_public_key(fleet["pub"]))
    assert frame_header.privacy == privacy
    # the poisoner moved the bias by at most clip / expected_nodes, plus the noise
    base = sent[1]  # every honest head is the initial v plus a 0.01 step
    noise_std = privacy.noise_multiplier * privacy.clip / privacy.expected_nodes
    assert abs(float(central[BIAS][2] - base[BIAS][2])) < 2.0 / 5 + 6 * noise_std
    # /metrics exports what was spent and what is left
    state = read_state(tmp_path / "agg.db")
    assert state.privacy == privacy
    metrics = {m.name: m.samples[0].value for m in FleetCollector(
        tmp_path / "agg.db", StatusBook(Topics()), 10.0).collect() if m.samples}  # fmt: skip
    assert metrics["fedvfer_aggregator_central_epsilon_spent"] == pytest.approx(8.0, rel=1e-6)
    assert metrics["fedvfer_aggregator_central_epsilon_left"] == pytest.approx(2.0, rel=1e-5)


def _latest_frame(tmp: Path) -> bytes:
    from broker_aggregator.store import State

    state = State(tmp / "agg.db")
    try:
        latest = state.latest_central()
    finally:
        state.close()
    assert latest is not None
    return latest[1]


def test_an_extra_worker_refuses_central_dp(tmp_path: Path) -> None:
    cfg = tmp_path / "aggregator.yaml"
    cfg.write_text(
        "insecure_unsigned: true\n"
        "central_privacy: {epsilon: 3, clip: 1, expected_nodes: 10}\n"
        "round: {rounds: 2, min_submissions: 3, max_submissions: 10}\n"
    )
    worker = subprocess.run(
        [sys.executable, "-m", "broker_aggregator", "worker", "--config", str(cfg)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode != 0
    assert "central_privacy clips every update" in worker.stderr + worker.stdout
