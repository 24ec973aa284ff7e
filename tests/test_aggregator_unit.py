"""The aggregator's pure parts and its state file: policy, admission, config, migrations."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from broker_aggregator.config import AggregatorConfig, load_aggregator_config
from broker_aggregator.policy import Admission, Decision, RoundPolicy, admit
from broker_aggregator.schema import _SCHEMA_1
from broker_aggregator.store import State, StateError
from broker_aggregator.validate import Expectations, check_values, decode_weights
from tests.support.aggregator import personalized, poison_rows, random_v
from vfer import weights as wcodec
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


def test_schema_1_bodies_move_into_the_payload_files(tmp_path: Path) -> None:
    db = tmp_path / "agg.db"
    conn = sqlite3.connect(db)
    for sql in _SCHEMA_1:
        conn.execute(sql)
    body = wcodec.to_bytes(random_v(6, np.random.default_rng(2)))
    conn.execute(
        "INSERT INTO submissions VALUES (3, 'pi-1', 7, 'u-0000007', 1.0, 0.0, 'float32', ?)",
        [body],
    )
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    state = State(db)
    try:
        assert (tmp_path / "agg.db.bak-v1").exists()
        assert state.latest_updates(3) == [("pi-1", 7, "u-0000007", 1.0)]
        assert poison_rows(state) == []  # migration 3 added the poison table
        assert list(state.bodies(3, {"pi-1": 7})) == [("pi-1", 7, 1.0, body)]
        assert list(state.bodies(3, {"pi-1": 6})) == []  # only the seq asked for
    finally:
        state.close()


def test_group_commit_stages_until_commit_and_rollback_forgets(tmp_path: Path) -> None:
    state = State(tmp_path / "agg.db", fsync=True)
    try:
        assert state.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        state.begin()
        state.store_update(1, "pi-1", 1, "u-1-aaaaaa", 1.0, 0.0, "float32", b"x" * 10)
        assert state.stored_seq(1, "pi-1") == (1, "u-1-aaaaaa")  # staged rows count for admission
        state.rollback()
        assert state.stored_seq(1, "pi-1") is None
        state.begin()
        state.store_update(1, "pi-1", 2, "u-2-bbbbbb", 1.0, 0.0, "float32", b"y" * 10)
        state.commit()
        assert list(state.bodies(1, {"pi-1": 2})) == [("pi-1", 2, 1.0, b"y" * 10)]
        state.drop_bodies_through(1)
        assert list(state.bodies(1, {"pi-1": 2})) == []
        assert not list((tmp_path / "agg.db.payloads").iterdir())
    finally:
        state.close()


def _st(header: dict[str, object], data: bytes) -> bytes:
    head = json.dumps(header).encode()
    return len(head).to_bytes(8, "little") + head + data


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff" * 8 + b"{}",  # header length beyond the buffer
        _st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),  # short
        _st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12),  # extra
        _st({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),  # size
        _st(
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
        ),  # overlap
        _st({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),
        _st({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8),
        _st({"a": "nope"}, b""),
        len(b"[1]").to_bytes(8, "little") + b"[1]",
    ],
)
def test_safetensors_headers_are_checked_before_any_array_is_made(body: bytes) -> None:
    exp = Expectations(vfer_spec(6), ("a",), 10**7, 100.0, 5.0)
    with pytest.raises(MessageError) as err:
        decode_weights(body, exp)
    assert err.value.reason == "bad_body"


def test_zero_copy_decode_matches_the_safetensors_library() -> None:
    w = random_v(6, np.random.default_rng(4))
    body = wcodec.to_bytes(w)
    exp = Expectations(vfer_spec(6), ("a",), 10**7, 100.0, 5.0)
    got = decode_weights(body, exp)
    ref = wcodec.from_bytes(body)
    assert set(got) == set(ref)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name])


def test_an_update_without_clips_under_sample_weighting_is_refused_before_the_loop() -> None:
    import uuid

    from broker_aggregator.validate import inspect_update
    from vfer.classes import EMOTIONS_6
    from vfer.messages import UpdateHeader, pack

    base = random_v(6, np.random.default_rng(0))
    exp = Expectations(
        vfer_spec(6), tuple(EMOTIONS_6), 10**7, 100.0, 50.0, round_id=1, round_open=True,
        base_version=1, base_weights=base, weighting="samples",
    )  # fmt: skip
    header = UpdateHeader(
        node_id="pi-1", round_id=1, base_version=1, update_id=uuid.uuid4().hex, seq=1,
        created_at=0.0, clips_per_class={"anger": 0},
    )  # fmt: skip
    with pytest.raises(MessageError) as err:
        inspect_update(pack(header, wcodec.to_bytes(base)), "pi-1", exp)
    assert err.value.reason == "no_samples"
    checked = inspect_update(
        pack(header.model_copy(update={"clips_per_class": {"anger": 3}}), wcodec.to_bytes(base)),
        "pi-1",
        exp,
    )
    assert checked.header.num_clips == 3


def test_weights_view_is_zero_copy_and_names_its_reasons() -> None:
    base = random_v(6, np.random.default_rng(0))
    body = wcodec.to_bytes(base)
    views = wcodec.view(body, vfer_spec(6), dtypes=("float32",))
    assert all(not v.flags.owndata and not v.flags.writeable for v in views.values())
    assert all(np.array_equal(views[n], base[n]) for n in base)
    with pytest.raises(wcodec.WeightsError) as err:
        wcodec.view(wcodec.to_bytes({**base, "x": np.zeros(1, np.float32)}), vfer_spec(6))
    assert err.value.reason == "unexpected_weights"
    assert wcodec.bounds_problem({"a": np.array([1.0, np.nan])}, 5.0) == (
        "non_finite",
        "a contains NaN or Inf",
    )
