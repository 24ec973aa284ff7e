"""The round message is signed with the fleet key like the central (issue 14, item 9): the pure
envelope functions, with the ``cryptography`` verifier as the oracle."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from vfer.messages import (
    CentralHeader,
    MessageError,
    Personalization,
    RoundMsg,
    open_round,
    sign_central,
    sign_round,
    to_json,
    unpack,
)

KEY = Ed25519PrivateKey.generate()
CLASSES = ["anger", "happiness", "neutral", "sadness"]


def round_msg(**kw: object) -> RoundMsg:
    fields: dict[str, object] = {
        "round_id": 3,
        "base_version": 3,
        "opened_at": 1764130000.0,
        "deadline": 1764133600.0,
        "min_submissions": 2,
        "max_submissions": 100,
        "classes": CLASSES,
        "personalization": Personalization(epochs=2, lr=1e-3),
    }
    return RoundMsg.model_validate({**fields, **kw})


def test_signed_round_verifies_and_the_signature_covers_the_rest() -> None:
    signed = sign_round(round_msg(), KEY)
    assert len(base64.b64decode(signed.signature)) == 64
    KEY.public_key().verify(base64.b64decode(signed.signature), signed.signing_bytes())  # oracle
    got = open_round(to_json(signed), KEY.public_key())
    assert got == signed and got.personalization.lr == 1e-3
    assert b"signature" not in signed.signing_bytes()


@pytest.mark.parametrize(
    "change",
    [
        {"personalization": {"p": 15, "p_threshold": 0.5, "epochs": 100, "lr": 1.0}},
        {"base_version": 1},
        {"round_id": 4},
        {"state": "finished"},
        {"deadline": 1.0},
        {"weight_dtype": "float16"},
    ],
)
def test_any_changed_field_breaks_the_signature(change: dict[str, object]) -> None:
    data = json.loads(to_json(sign_round(round_msg(), KEY)))
    data.update(change)
    with pytest.raises(MessageError) as err:
        open_round(json.dumps(data).encode(), KEY.public_key())
    assert err.value.reason == "bad_signature"


def test_unsigned_wrong_key_and_garbage_are_refused() -> None:
    public = KEY.public_key()
    reasons = {}
    cases = {
        "unsigned": to_json(round_msg()),
        "wrong_key": to_json(sign_round(round_msg(), Ed25519PrivateKey.generate())),
        "not_base64": to_json(round_msg(signature="!!!not base64!!!")),
        "short": to_json(round_msg(signature=base64.b64encode(b"x" * 10).decode())),
    }
    for name, payload in cases.items():
        with pytest.raises(MessageError) as err:
            open_round(payload, public)
        reasons[name] = err.value.reason
    assert reasons == {
        "unsigned": "unsigned",
        "wrong_key": "bad_signature",
        "not_base64": "bad_signature",
        "short": "bad_signature",
    }
    with pytest.raises(MessageError) as err:
        open_round(to_json(sign_round(round_msg(), KEY)), None)
    assert err.value.reason == "no_key"
    # Dev mode (the demo without keys) still reads unsigned rounds; sign_round(None) makes them.
    assert open_round(to_json(sign_round(round_msg(), None)), None, allow_unsigned=True).round_id


def test_a_central_signature_is_no_round_signature() -> None:
    """The signed documents differ (``kind``), so a signature cannot be moved between them."""
    frame = sign_central(
        CentralHeader(version=3, round_id=3, classes=CLASSES, created_at=0), b"", KEY
    )
    header, _ = unpack(frame, CentralHeader)
    with pytest.raises(MessageError) as err:
        open_round(to_json(round_msg(signature=header.signature)), KEY.public_key())
    assert err.value.reason == "bad_signature"


@settings(max_examples=40, deadline=None)
@given(
    epochs=st.integers(1, 100),
    lr=st.floats(1e-9, 1.0, allow_nan=False),
    deadline=st.floats(0, 2e10, allow_nan=False),
    base=st.integers(1, 2**40),
)
def test_signatures_survive_the_json_round_trip(
    epochs: int, lr: float, deadline: float, base: int
) -> None:
    msg = round_msg(
        personalization=Personalization(epochs=epochs, lr=lr), deadline=deadline, base_version=base
    )
    assert open_round(to_json(sign_round(msg, KEY)), KEY.public_key()).base_version == base


def test_signature_field_is_bounded() -> None:
    data = json.loads(to_json(round_msg()))
    data["signature"] = "A" * 500
    with pytest.raises(MessageError) as err:
        open_round(json.dumps(data).encode(), KEY.public_key())
    assert err.value.reason == "invalid_header"
