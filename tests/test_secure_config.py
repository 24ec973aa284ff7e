"""Issue 23, item 1: the ``secure_aggregation`` section, the round message that carries it, and
the node identities ``add-node`` makes and ``revoke-node`` revokes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from broker_aggregator.config import load_aggregator_config
from broker_aggregator.validate import Expectations, inspect_update
from edge_node.config import FederationConfig
from edge_node.federation import FederationClient, NodeUpdate
from provisioning.fleet import add_node, init_fleet, load_fleet, revoke_node
from tests.support.aggregator import random_v
from tests.support.raw_node import update_frame
from vfer import signing
from vfer.heads_spec import vfer_spec
from vfer.messages import (
    MessageError,
    Personalization,
    RoundMsg,
    from_json,
    sign_round,
    to_json,
)
from vfer.secagg import (
    SecAggParams,
    commit_seed,
    fingerprint,
    load_identity,
    load_voucher,
    new_seed,
    open_revocations,
    verify_voucher,
)
from vfer.secagg.params import SecAggError
from vfer.secagg.wire import SecAggRound
from vfer.signing import load_public_key

SECURE = {"secure_aggregation.vouching_public_key": "vouch.pem"}
ROUND8 = {"round.min_submissions": 8, "round.max_submissions": 8}


def _cfg(**over: object) -> object:
    return load_aggregator_config(None, insecure_unsigned=True, **over)


def test_off_by_default_and_its_defaults() -> None:
    assert _cfg().secure_aggregation is None  # type: ignore[attr-defined]
    sa = _cfg(**SECURE, **ROUND8).secure_aggregation  # type: ignore[attr-defined]
    assert (sa.min_group_size, sa.threshold_fraction, sa.weighting) == (8, 0.5, "mean")
    assert sa.params(208_582) == SecAggParams(vector_length=208_582)


@pytest.mark.parametrize(
    ("over", "words"),
    [
        (
            {"central_privacy.epsilon": 1, "central_privacy.clip": 1,
             "central_privacy.expected_nodes": 8, "round.rounds": 1},
            ["central_privacy", "secure_aggregation"],
        ),
        ({"secure_aggregation.min_group_size": 4}, ["min_group_size"]),
        ({"round.min_submissions": 5, "round.max_submissions": 8}, ["min_submissions", "8"]),
    ],
)  # fmt: skip
def test_refused_combinations_name_their_keys(over: dict[str, object], words: list[str]) -> None:
    with pytest.raises((ValidationError, ValueError)) as err:
        _cfg(**{**SECURE, **ROUND8, **over})
    for word in words:
        assert word in str(err.value)


def _round(**extra: object) -> RoundMsg:
    return RoundMsg(
        round_id=3, base_version=2, opened_at=1.0, deadline=2.0, min_submissions=1,
        max_submissions=9, classes=["a", "b"], personalization=Personalization(), **extra,
    )  # fmt: skip


def test_a_plain_round_message_is_byte_for_byte_what_it_was() -> None:
    msg = _round()
    raw = to_json(msg)
    assert b"secure_aggregation" not in raw and b"secure_aggregation" not in msg.signing_bytes()
    fields = json.loads(raw)
    assert list(fields) == [
        "schema", "kind", "round_id", "base_version", "state", "opened_at", "deadline",
        "min_submissions", "max_submissions", "classes", "weight_dtype", "personalization",
        "signature",
    ]  # fmt: skip


def test_a_secure_round_carries_params_and_the_seed_commitment() -> None:
    info = SecAggRound(
        params=SecAggParams(vector_length=10), group_seed_commitment=commit_seed(3, new_seed())
    )
    msg = _round(secure_aggregation=info)
    assert b"group_seed_commitment" in msg.signing_bytes()  # the fleet key signs it
    assert from_json(to_json(msg), RoundMsg).secure_aggregation == info


def test_add_node_gives_a_vouched_identity_and_revoke_node_revokes_it(tmp_path: Path) -> None:
    d = tmp_path / "fleet"
    init_fleet(d, broker_host="broker.lan")
    folder = add_node(d, "pi-1")
    vouching = load_public_key(d / "vouching_public_key.pem")
    assert (d / "aggregator" / "vouching_public_key.pem").read_bytes() == (
        d / "vouching_public_key.pem"
    ).read_bytes()
    assert not (d / "aggregator" / "vouching").exists()  # the private key stays apart
    assert (folder / "identity_key.pem").stat().st_mode & 0o777 == 0o600
    key = load_identity(folder / "identity_key.pem")
    voucher = load_voucher(folder / "identity_voucher.json")
    assert verify_voucher(voucher, vouching, node_id="pi-1")
    assert load_fleet(d).nodes["pi-1"].identity_fingerprint == fingerprint(key)
    revoke_node(d, "pi-1")
    assert not (folder / "identity_key.pem").exists()
    revoked = open_revocations((d / "aggregator" / "revocations.json").read_bytes(), vouching)
    assert revoked.fingerprints == [fingerprint(key)]
    with pytest.raises(SecAggError) as err:
        verify_voucher(voucher, vouching, frozenset(revoked.fingerprints), node_id="pi-1")
    assert err.value.reason == "revoked"


def test_a_secure_round_refuses_updates_in_the_clear() -> None:
    w = random_v(6, np.random.default_rng(0))
    exp = Expectations(
        spec=vfer_spec(6), classes=("anger",), max_payload_bytes=4_000_000, max_abs_weight=1e3,
        max_update_norm=100, round_id=1, round_open=True, base_version=1, base_weights=w,
    )  # fmt: skip
    frame = update_frame("pi-1", 1, 1, 1, w)
    assert inspect_update(frame, "pi-1", exp).header.node_id == "pi-1"
    with pytest.raises(MessageError) as err:
        inspect_update(frame, "pi-1", dataclasses.replace(exp, secure=True))
    assert err.value.reason == "secure_round"


def test_a_node_without_an_identity_sits_a_secure_round_out(tmp_path: Path) -> None:
    priv, pub = signing.generate_keypair(tmp_path / "fleet")
    info = SecAggRound(
        params=SecAggParams(vector_length=10), group_seed_commitment=commit_seed(3, new_seed())
    )
    rnd = sign_round(_round(secure_aggregation=info), signing.load_private_key(priv))
    settings = FederationConfig(enabled=True, fleet_public_key=pub)
    client = FederationClient("pi-1", settings, tmp_path / "outbox.db")
    try:
        assert client.secure is None
        client._on_round(to_json(rnd))
        assert client.current_round() == rnd
        w = random_v(2, np.random.default_rng(0))
        assert client.submit(NodeUpdate(3, 2, w, {"a": 1})) == ""  # nothing queued, nothing sent
        assert client.pending() == 0
    finally:
        client.outbox.close()
        client.received.close()


def test_the_start_warns_when_a_robust_rule_trims_nothing_over_groups(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from broker_aggregator.cli import _warn_if_toothless

    over = {**SECURE, "round.min_submissions": 24, "round.max_submissions": 24}
    cfg = _cfg(**over, rule="trimmed_mean", robust_fraction=0.2)
    with caplog.at_level("WARNING"):
        _warn_if_toothless(cfg)  # type: ignore[arg-type]
    assert "makes 3 groups" in caplog.text and "trims nothing at 3 groups" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        _warn_if_toothless(_cfg(**over, rule="trimmed_mean", robust_fraction=0.4))  # type: ignore[arg-type]
    assert caplog.text == ""  # floor(0.4 x 3) = 1 trimmed at each end
