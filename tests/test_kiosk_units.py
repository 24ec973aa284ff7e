"""Kiosk pure parts: the operator password (parsing, constant-time check, throttle) and the
operator page's data shape."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node.kiosk.operator_data import class_order, clip_row, operator_summary
from vfer.basic_auth import FailureThrottle, basic_password, load_password, password_matches


def basic(user: bytes, password: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + password).decode()


@given(st.binary(max_size=40).filter(lambda b: b":" not in b), st.binary(max_size=60))
def test_basic_header_round_trips_any_password(user: bytes, password: bytes) -> None:
    assert basic_password(basic(user, password)) == password


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Bearer abc",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"nocolon").decode(),
    ],
)
def test_malformed_authorization_gives_no_password(header: str | None) -> None:
    assert basic_password(header) is None


def test_password_matches_only_the_exact_bytes() -> None:
    assert password_matches(b"s3cret", b"s3cret")
    assert not password_matches(b"s3cret ", b"s3cret")
    assert not password_matches(b"", b"s3cret")
    assert not password_matches(None, b"s3cret")


def test_load_password_strips_the_newline_and_refuses_bad_files(tmp_path: Path) -> None:
    assert load_password(None) is None
    good = tmp_path / "pw"
    good.write_text("hunter2\n")
    assert load_password(good) == b"hunter2"
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        load_password(empty)
    with pytest.raises(ValueError, match=r"missing: cannot read"):
        load_password(tmp_path / "missing")


def test_throttle_blocks_after_the_limit_and_forgets_after_the_window() -> None:
    throttle = FailureThrottle(limit=3, window_s=60)
    for t in (0.0, 1.0, 2.0):
        assert not throttle.blocked(t)
        throttle.record_failure(t)
    assert throttle.blocked(30.0)
    assert throttle.blocked(59.9)
    assert not throttle.blocked(60.5)  # the first failure expired
    with pytest.raises(ValueError):
        FailureThrottle(limit=0)


@dataclass(frozen=True)
class Clip:
    id: int
    started_at: float
    ended_at: float
    frame_count: int
    prediction: str
    confidence: float


@dataclass(frozen=True)
class Bucket:
    start: float
    counts: dict[str, int]


class ListReader:
    def __init__(self, clips: list[Clip], bucket: float) -> None:
        self.clips = clips
        self.bucket = bucket

    def class_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.clips:
            out[c.prediction] = out.get(c.prediction, 0) + 1
        return out

    def recent_clips(self, limit: int = 20) -> list[Clip]:
        return sorted(self.clips, key=lambda c: -c.started_at)[:limit]

    def timeline(self, bucket_s: float = 3600.0) -> list[Bucket]:
        buckets: dict[float, dict[str, int]] = {}
        for c in self.clips:
            b = buckets.setdefault(c.started_at // bucket_s * bucket_s, {})
            b[c.prediction] = b.get(c.prediction, 0) + 1
        return [Bucket(t, buckets[t]) for t in sorted(buckets, reverse=True)]


def test_summary_counts_orders_classes_and_sorts_buckets() -> None:
    clips = [
        Clip(1, 100.0, 103.0, 30, "happiness", 0.7),
        Clip(2, 4000.0, 4002.0, 20, "anger", 0.5),
        Clip(3, 4100.0, 4104.5, 45, "surprise", 0.9),  # a class the current bundle lacks
    ]
    data = operator_summary(ListReader(clips, 3600), ("happiness", "anger", "neutral"), 2, 3600)
    assert data["classes"] == ["happiness", "anger", "neutral", "surprise"]
    assert data["counts"] == {"happiness": 1, "anger": 1, "neutral": 0, "surprise": 1}
    assert data["total"] == 3
    assert [r["id"] for r in data["recent"]] == [3, 2]
    assert data["recent"][0] == {
        "id": 3,
        "start": 4100.0,
        "end": 4104.5,
        "frames": 45,
        "prediction": "surprise",
        "confidence": 0.9,
    }
    assert [b["t"] for b in data["timeline"]["buckets"]] == [0.0, 3600.0]
    assert data["timeline"]["buckets"][1]["counts"] == {"anger": 1, "surprise": 1}


def test_class_order_keeps_the_bundle_order_first() -> None:
    assert class_order(("b", "a"), {"c": 1, "a": 2}, {"d": 1}) == ["b", "a", "c", "d"]
    assert clip_row(Clip(7, 1.0, 2.0, 3, "x", 0.123456))["confidence"] == 0.1235


def test_preview_is_encoded_only_while_someone_watches() -> None:
    import time as _time

    from edge_node.state import NodeState

    state = NodeState()
    now = _time.monotonic()
    assert not state.preview_wanted(now)  # nobody has asked: the pipeline skips JPEG encoding
    state.preview()  # a viewer (MJPEG stream or /preview.jpg) reads it
    assert state.preview_wanted(_time.monotonic())
    assert not state.preview_wanted(_time.monotonic() + 5.0)  # the viewer left
