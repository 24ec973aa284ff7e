"""The round close as pure pieces: the close request, the workers' answers, the contributions and
the one function that applies the rule (broker_aggregator/closing.py and rules.py), against
oracles (np.average, np.median, a brute-force Krum pick by node id)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from broker_aggregator.closing import (
    RESEND_CLOSE_S,
    Closing,
    Columns,
    LocalColumns,
    Summed,
    WorkerSums,
    close_request,
)
from broker_aggregator.effects import LocalClose, Publish
from broker_aggregator.robust import Reader
from broker_aggregator.rules import (
    central_weighting,
    close_factors,
    combine,
    gather_for,
    toothless,
)
from broker_aggregator.store import State
from vfer.fedavg import AggregationError, RunningSum
from vfer.messages import PartialHeader

SHAPES = {"a.kernel": (4, 3), "a.bias": (3,)}


def updates(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()} for _ in range(n)]


def columns(nodes: list[str], ups: list[dict[str, np.ndarray]]) -> Columns:
    @contextlib.contextmanager
    def open_() -> Iterator[Reader]:
        yield lambda name, lo, hi: np.stack([u[name].ravel()[lo:hi] for u in ups])

    return Columns(tuple(nodes), SHAPES, open_)


def summed(ups: list[dict[str, np.ndarray]], factors: list[float]) -> Summed:
    acc = RunningSum()
    for u, f in zip(ups, factors, strict=True):
        acc.add(u, f)
    return Summed(acc)


def test_mean_of_the_sums_is_the_weighted_average() -> None:
    ups, factors = updates(5), [1.0, 3.0, 2.0, 5.0, 4.0]
    got = combine("mean", summed(ups, factors))
    assert got.count == 5 and got.central is not None
    for k in SHAPES:
        want = np.average(np.stack([u[k] for u in ups]), axis=0, weights=factors)
        np.testing.assert_allclose(got.central[k], want, rtol=1e-6)


def test_median_over_the_columns_matches_numpy() -> None:
    ups = updates(7, seed=3)
    got = combine("median", columns([f"pi-{i}" for i in range(7)], ups))
    assert got.count == 7 and got.central is not None
    for k in SHAPES:
        want = np.median(np.stack([u[k].astype(np.float64) for u in ups]), axis=0)
        np.testing.assert_array_equal(got.central[k], want.astype(np.float32))


def test_krum_names_the_node_it_picked() -> None:
    ups = updates(6, seed=1)
    far = {k: v + 50.0 for k, v in ups[0].items()}  # node pi-a is far from everyone
    nodes = ["pi-a", "pi-b", "pi-c", "pi-d", "pi-e", "pi-f"]
    got = combine("krum", columns(nodes, [far, *ups[1:]]), fraction=0.2)
    assert got.info["selected"] in nodes[1:]
    picked = [far, *ups[1:]][nodes.index(str(got.info["selected"]))]
    assert got.central is not None
    for k in SHAPES:
        np.testing.assert_array_equal(got.central[k], picked[k])


def test_nothing_to_combine_gives_no_central() -> None:
    assert combine("mean", Summed(RunningSum())).central is None
    empty = combine("trimmed_mean", columns([], []))
    assert empty.central is None and empty.count == 0


def test_a_rule_refuses_the_wrong_kind_of_contributions() -> None:
    with pytest.raises(AggregationError, match="needs every update"):
        combine("median", summed(updates(2), [1.0, 1.0]))
    with pytest.raises(AggregationError, match="workers' sums"):
        combine("mean", columns(["pi-1"], updates(1)))


def test_the_rule_says_how_the_updates_must_arrive(tmp_path: Path) -> None:
    assert isinstance(gather_for("mean", None, "agg-1", SHAPES), WorkerSums)  # type: ignore[arg-type]
    state = State(tmp_path / "agg.db")
    try:
        for rule in ("median", "trimmed_mean", "krum"):
            assert isinstance(gather_for(rule, state, "agg-1", SHAPES), LocalColumns)  # type: ignore[arg-type]
    finally:
        state.close()


def test_weights_are_capped_only_under_sample_weighting() -> None:
    counted = {"pi-1": 10_000.0, "pi-2": 30.0, "pi-3": 30.0, "pi-4": 30.0, "pi-5": 30.0}
    capped = close_factors("samples", 0.2, counted)
    assert capped["pi-1"] == pytest.approx(0.2 * sum(capped.values()))
    assert close_factors("mean", 0.2, counted) == {}
    assert close_factors("samples", 1.0, counted) == {}
    assert central_weighting("mean", "samples") == "samples"
    assert central_weighting("krum", "samples") == "krum"


def test_the_close_assigns_each_worker_exactly_its_counted_updates() -> None:
    accepted = {"pi-2": ("agg-2", 4), "pi-1": ("agg-1", 7), "pi-3": ("agg-2", 1)}
    close = close_request(3, accepted, {"pi-1": 2.5})
    assert close.assignments == {"agg-1": {"pi-1": 7}, "agg-2": {"pi-2": 4, "pi-3": 1}}
    assert close.factors == {"pi-1": 2.5} and close.round_id == 3


def partial(worker: str, nodes: dict[str, int], round_id: int = 3) -> PartialHeader:
    return PartialHeader(worker_id=worker, round_id=round_id, nodes=nodes, total_weight=1.0)


def test_closing_waits_for_every_asked_worker_and_resends() -> None:
    close = close_request(3, {"pi-1": ("agg-1", 1), "pi-2": ("agg-2", 1)}, {})
    closing = Closing(close)
    sent = closing.send("fedvfer/aggregator/close", "agg-1", now=100.0)
    assert [type(e) for e in sent] == [Publish, LocalClose]  # agg-2 is another process
    assert closing.waiting() == ["agg-1", "agg-2"]
    assert not closing.due(100.0 + RESEND_CLOSE_S) and closing.due(100.1 + RESEND_CLOSE_S)
    a, b = updates(2)
    one, two = RunningSum(), RunningSum()
    one.add(a)
    two.add(b)
    assert not closing.take(partial("agg-3", {"pi-9": 1}), two)  # asked for nothing
    assert not closing.take(partial("agg-2", {"pi-2": 1}, round_id=2), two)  # another round
    assert closing.take(partial("agg-1", {"pi-1": 1}), one)
    assert WorkerSums().contributions(closing) is None  # agg-2 is still silent
    assert closing.take(partial("agg-2", {"pi-2": 1}), two)
    assert not closing.waiting() and not closing.due(1e9)
    got = WorkerSums().contributions(closing)
    assert isinstance(got, Summed) and got.total.count == 2
    for k in SHAPES:
        np.testing.assert_allclose(got.total.sums[k], a[k].astype(np.float64) + b[k])


def test_a_lone_leader_sends_its_close_to_no_one_else() -> None:
    closing = Closing(close_request(1, {"pi-1": ("agg-1", 1)}, {}))
    assert [type(e) for e in closing.send("t", "agg-1", now=0.0)] == [LocalClose]


@pytest.mark.parametrize(
    ("rule", "fraction", "n", "warned"),
    [
        ("trimmed_mean", 0.2, 3, True),  # floor(0.6) = 0: the plain mean, silently until now
        ("trimmed_mean", 0.2, 5, False),
        ("krum", 0.2, 4, True),
        ("krum", 0.2, 10, False),
        ("median", 0.2, 3, False),
        ("mean", 0.2, 3, False),
    ],
)
def test_a_robust_rule_that_would_trim_nothing_is_named(
    rule: str, fraction: float, n: int, warned: bool
) -> None:
    why = toothless(rule, fraction, n)  # type: ignore[arg-type]
    assert (why is not None) == warned
    if why:
        assert rule in why and str(n) in why
