"""Envelopes: frames with checksums, JSON messages, signed centrals; every failure has a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.aggregator import random_v
from vfer import signing
from vfer import weights as wcodec
from vfer.messages import (
    AckMsg,
    CentralHeader,
    MessageError,
    RoundMsg,
    UpdateHeader,
    from_json,
    open_central,
    pack,
    sign_central,
    to_json,
    unpack,
)


def update_header(**kw: object) -> UpdateHeader:
    fields: dict[str, object] = {
        "node_id": "pi-1",
        "round_id": 3,
        "base_version": 2,
        "update_id": "abcdef0123",
        "seq": 1,
        "created_at": 0.0,
        "clips_per_class": {"anger": 2},
    }
    return UpdateHeader.model_validate({**fields, **kw})


def test_update_frame_round_trip_and_size() -> None:
    body = wcodec.to_bytes(random_v(6, np.random.default_rng(0)))
    frame = pack(update_header(), body)
    header, out = unpack(frame, UpdateHeader)
    assert out == body and header.body_size == len(body) and header.num_clips == 2
    assert 834_000 < len(frame) < 840_000  # 208,582 float32 values plus small headers


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: b"XXXX" + f[4:], "not_a_frame"),
        (lambda f: f[:6], "not_a_frame"),
        (lambda f: f[:-1], "truncated"),
        (lambda f: f + b"!", "truncated"),
        (lambda f: f[:-1] + bytes([f[-1] ^ 1]), "checksum"),
        (lambda f: f.replace(b'"schema":1', b'"schema":7'), "schema_version"),
        (lambda f: f.replace(b'"kind":"update"', b'"kind":"status"'), "wrong_kind"),
        (lambda f: f.replace(b'"seq":1', b'"seq":0'), "invalid_header"),
    ],
)
def test_frame_failures_have_reasons(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    frame = pack(update_header(), b"0123456789")
    with pytest.raises(MessageError) as err:
        unpack(mutate(frame), UpdateHeader)
    assert err.value.reason == reason


def test_json_messages() -> None:
    ack = AckMsg(node_id="pi-1", round_id=3, update_id="abc", status="stored")
    assert from_json(to_json(ack), AckMsg) == ack
    with pytest.raises(MessageError) as err:
        from_json(to_json(ack), RoundMsg)
    assert err.value.reason == "wrong_kind"
    for junk in (b"\xff\xfe", b"[1, 2]", b'{"schema": 1, "kind": "ack"}'):
        with pytest.raises(MessageError):
            from_json(junk, AckMsg)
    with pytest.raises(ValueError):
        update_header(node_id="a/b")


def test_central_signature(tmp_path: Path) -> None:
    priv, pub = signing.generate_keypair(tmp_path)
    key, public = signing.load_private_key(priv), signing.load_public_key(pub)
    header = CentralHeader(version=4, round_id=3, classes=["a", "b"], created_at=1.0)
    frame = sign_central(header, b"weights", key)
    opened, body = open_central(frame, public)
    assert opened.version == 4 and body == b"weights"
    forged = frame.replace(b'"version":4', b'"version":9')
    cases = {
        "unsigned": sign_central(header, b"weights", None),
        "bad_signature": forged,
        "checksum": frame[:-1] + b"W",
    }
    other = signing.load_private_key(signing.generate_keypair(tmp_path / "o")[0])
    cases_other = sign_central(header, b"weights", other)
    for reason, payload in {**cases, "bad_signature ": cases_other}.items():
        with pytest.raises(MessageError) as err:
            open_central(payload, public)
        assert err.value.reason == reason.strip()
    assert open_central(cases["unsigned"], None, allow_unsigned=True)[0].signature == ""
