"""The aggregator's pure parts and its state file: policy, admission, config, migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from broker_aggregator.config import AggregatorConfig, load_aggregator_config
from broker_aggregator.policy import Admission, Decision, RoundPolicy, admit
from broker_aggregator.simulate import personalized, random_v
from broker_aggregator.store import State, StateError
from broker_aggregator.validate import Expectations, check_values
from vfer.config_io import ConfigError
from vfer.heads_spec import vfer_spec
from vfer.messages import MessageError


def test_round_policy() -> None:
    p = RoundPolicy(min_submissions=3, max_submissions=5, deadline_s=60)
    assert p.decide(5, now=0, deadline=100) is Decision.CLOSE
    assert p.decide(2, now=0, deadline=100) is Decision.WAIT
    assert p.decide(3, now=100, deadline=100) is Decision.CLOSE
    assert p.decide(2, now=100, deadline=100) is Decision.EXTEND
    assert p.next_deadline(100) == 160


def test_admission() -> None:
    assert admit(None, 1, "a") is Admission.STORE
    assert admit((3, "a"), 3, "a") is Admission.DUPLICATE
    assert admit((3, "a"), 4, "b") is Admission.REPLACE
    assert admit((3, "a"), 2, "c") is Admission.REPLAY


def test_values_norm_is_measured_from_the_base() -> None:
    rng = np.random.default_rng(0)
    base = random_v(6, rng)
    exp = Expectations(vfer_spec(6), ("a", "b"), 10**7, 100.0, 5.0, base_weights=base)
    check_values(personalized(base, rng, step=0.001), exp)  # small move: fine
    with pytest.raises(MessageError) as err:
        check_values(personalized(base, rng, step=0.1), exp)
    assert err.value.reason == "norm_bound"


def test_config_accepts_the_provisioning_keys_and_rejects_unknown(tmp_path: Path) -> None:
    y = tmp_path / "aggregator.yaml"
    y.write_text(
        "broker_url: mqtts://broker.local:8883\nusername: aggregator\npassword_file: pw\n"
        "ca_file: ca.pem\nsigning_key_file: signing_key.pem\ntopic_prefix: fleet1\n"
        "round: {min_submissions: 2, max_submissions: 10}\n"
    )
    cfg = load_aggregator_config(y, **{"round.rounds": 3})
    assert isinstance(cfg, AggregatorConfig) and cfg.round.rounds == 3 and cfg.weighting == "mean"
    y.write_text("signing_key_file: k.pem\nbroker: mqtt://x\n")
    with pytest.raises(ConfigError, match="line 2: broker"):
        load_aggregator_config(y)
    y.write_text("insecure_unsigned: false\n")
    with pytest.raises(ConfigError, match="signing_key_file is required"):
        load_aggregator_config(y)
    y.write_text("signing_key_file: k.pem\nround: {min_submissions: 5, max_submissions: 2}\n")
    with pytest.raises(ConfigError, match="min_submissions"):
        load_aggregator_config(y)


def test_state_db_refuses_a_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "agg.db"
    State(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StateError, match="newer"):
        State(db)
