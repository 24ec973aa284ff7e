"""The envelope every fleet message travels in: framing, schema, bounds, checks and signatures.

Two shapes travel (the messages themselves are :mod:`vfer.messages`; docs/mqtt.md has an example
of each):

* **Frames** carry weights: ``b"FVF1"``, a 4-byte big-endian header length, the header as
  UTF-8 JSON (a pydantic model with ``schema``, ``kind``, ``body_size``, ``body_sha256``), then
  the body, a safetensors blob (never pickle).
* **JSON** messages carry no weights.

**Signatures.** A :class:`Signed` message carries ``signature``: base64 Ed25519 (the fleet key,
:mod:`vfer.signing`) over the canonical JSON (sorted keys, no spaces) of every other field; a
frame's header covers its body through ``body_sha256``. :func:`sign_message`,
:func:`pack_signed` and :func:`verify_message`.

Decoding never trusts the input: every failure raises :class:`MessageError` whose ``reason``
is a short code (``checksum``, ``schema_version``, ...) that the receiver logs and counts.

**Bounds.** Every integer has a documented range far inside SQLite's int64: ids, versions and
sequence numbers at most :data:`MAX_ID` (2**53 - 1, also the largest integer a JSON double
holds exactly), clip counts at most :data:`MAX_CLIPS` per class, sizes at most
:data:`MAX_BODY_BYTES`. Floats must be finite. Strings and maps have maximum lengths. Anything
outside is ``invalid_header``.

A new kind of message subclasses :class:`Message` (JSON), :class:`Framed` (with a body),
:class:`NodeMessage` (names a node) and/or :class:`Signed`, with a ``kind`` literal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Annotated, Any, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vfer import signing
from vfer.topics import check_node_id

SCHEMA_VERSION = 1
MAGIC = b"FVF1"
MAX_HEADER_BYTES = 64 * 1024
#: Largest id, version or sequence number (2**53 - 1: exact in a JSON double, far under int64).
MAX_ID = 2**53 - 1
#: Largest clip count per class in any envelope (the config's ``max_clips_per_class`` is lower).
MAX_CLIPS = 10**9
#: Largest body of any frame (the config's ``max_payload_bytes`` is lower).
MAX_BODY_BYTES = 1 << 31
#: Largest number of entries in any map or list of an envelope (classes, metrics, assignments).
MAX_ENTRIES = 100_000
#: Longest short string (ids, reasons, names of classes and metrics).
MAX_TEXT = 64

Id = Annotated[int, Field(ge=0, le=MAX_ID)]
PosId = Annotated[int, Field(ge=1, le=MAX_ID)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
_LEN = struct.Struct(">I")


class MessageError(ValueError):
    """A payload that is not an acceptable message; ``reason`` is a stable short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        #: The decoded header when the envelope itself was fine (set by the caller that knows).
        self.header: BaseModel | None = None


class Message(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )
    schema_: int = Field(SCHEMA_VERSION, alias="schema", description="wire schema version")

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class NodeMessage(Message):
    node_id: str = Field(description="sender or addressee node id (a topic level)")

    @field_validator("node_id")
    @classmethod
    def _node(cls, v: str) -> str:
        return check_node_id(v)


class Framed(Message):
    body_size: int = Field(0, ge=0, le=MAX_BODY_BYTES, description="bytes of the body")
    body_sha256: str = Field("", max_length=64, description="hex sha256 of the body")


def canonical_unsigned(msg: Message) -> bytes:
    """What a signature covers: canonical JSON (sorted keys, no spaces) of all but ``signature``."""
    data = msg.model_dump(mode="json", by_alias=True, exclude={"signature"})
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class Signed(Message):
    """A message the fleet key signs (module docstring, "Signatures")."""

    signature: str = Field(
        "", max_length=128, description="base64 Ed25519 signature of the message without it"
    )

    def signing_bytes(self) -> bytes:
        return canonical_unsigned(self)


M = TypeVar("M", bound=Message)
F = TypeVar("F", bound=Framed)


class SignedMessage(Protocol):
    """What :func:`sign_message` and :func:`verify_message` need of a message."""

    @property
    def signature(self) -> str: ...

    def signing_bytes(self) -> bytes: ...

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any: ...


S = TypeVar("S", bound=SignedMessage)


def pack(header: Framed, body: bytes) -> bytes:
    """A frame: magic, header length, header JSON (with body size and sha256 filled in), body."""
    return _frame(_with_body(header, body), body)


def _with_body(header: F, body: bytes) -> F:
    filled: F = header.model_copy(
        update={"body_size": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
    )
    return filled


def _frame(header: Framed, body: bytes) -> bytes:
    head = json.dumps(header.to_json_dict(), separators=(",", ":")).encode()
    return MAGIC + _LEN.pack(len(head)) + head + body


def unpack(payload: bytes, model: type[F]) -> tuple[F, bytes]:
    """Split and check a frame: magic, header, schema, kind, size and checksum."""
    if len(payload) < len(MAGIC) + _LEN.size or not payload.startswith(MAGIC):
        raise MessageError("not_a_frame", f"{len(payload)} bytes without the {MAGIC!r} magic")
    (n,) = _LEN.unpack_from(payload, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if n > MAX_HEADER_BYTES or start + n > len(payload):
        raise MessageError("truncated", f"header of {n} bytes does not fit the payload")
    header = _validate(_json(payload[start : start + n]), model)
    body = payload[start + n :]
    if len(body) != header.body_size:
        raise MessageError(
            "truncated", f"body has {len(body)} bytes, header says {header.body_size}"
        )
    if hashlib.sha256(body).hexdigest() != header.body_sha256:
        raise MessageError("checksum", "body sha256 differs from the header")
    return header, body


def to_json(msg: Message) -> bytes:
    return json.dumps(msg.to_json_dict(), separators=(",", ":")).encode()


def from_json(payload: bytes, model: type[M]) -> M:
    if len(payload) > MAX_HEADER_BYTES:
        raise MessageError("oversized", f"{len(payload)} bytes for a JSON message")
    return _validate(_json(payload), model)


def sign_message(msg: S, key: Ed25519PrivateKey | None) -> S:
    """``msg`` signed with the fleet key; ``key`` None: unsigned (``insecure_unsigned`` dev mode)."""
    unsigned: S = msg.model_copy(update={"signature": ""})
    if key is None:
        return unsigned
    sig = base64.b64encode(signing.sign(key, unsigned.signing_bytes())).decode()
    signed: S = unsigned.model_copy(update={"signature": sig})
    return signed


def verify_message(
    msg: S, key: Ed25519PublicKey | None, what: str, *, allow_unsigned: bool = False
) -> S:
    """``msg`` itself when its signature verifies against the fleet public key.

    Reasons: ``unsigned`` (unless ``allow_unsigned``), ``no_key``, ``bad_signature``."""
    if not msg.signature:
        if allow_unsigned:
            return msg
        raise MessageError("unsigned", f"{what} carries no signature")
    if key is None:
        raise MessageError("no_key", f"no fleet public key to verify the {what} with")
    try:
        sig = base64.b64decode(msg.signature, validate=True)
    except ValueError as exc:
        raise MessageError("bad_signature", f"signature is not base64: {exc}") from exc
    if not signing.verify(key, sig, msg.signing_bytes()):
        raise MessageError("bad_signature", f"{what} fails verification")
    return msg


def pack_signed(header: F, body: bytes, key: Ed25519PrivateKey | None) -> bytes:
    """A signed frame: the header (body size and sha256 filled in) signed, then framed."""
    return _frame(sign_message(_with_body(header, body), key), body)  # type: ignore[type-var]


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also int literals too long, deep nesting
        raise MessageError("bad_header", f"not UTF-8 JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise MessageError("bad_header", f"expected a JSON object, got {type(data).__name__}")
    return data


def _validate(data: dict[str, Any], model: type[M]) -> M:
    schema = data.get("schema")
    if schema != SCHEMA_VERSION:
        raise MessageError(
            "schema_version", f"schema {schema!r}, this side speaks {SCHEMA_VERSION}"
        )
    expected = model.model_fields["kind"].default if "kind" in model.model_fields else None
    if expected is not None and data.get("kind") != expected:
        raise MessageError("wrong_kind", f"kind {data.get('kind')!r}, expected {expected!r}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MessageError("invalid_header", f"{where}: {first['msg']}") from None
