"""When the node personalizes: pure time-window arithmetic (no clock inside)."""

from __future__ import annotations

from datetime import datetime, time


def parse_hhmm(text: str) -> time:
    h, m = text.split(":")
    return time(int(h), int(m))


def in_window(now: datetime, start: str, end: str) -> bool:
    """True when ``now`` (local time) lies in [start, end); the window may wrap past midnight."""
    t, a, b = now.time(), parse_hhmm(start), parse_hhmm(end)
    if a == b:
        return True  # a 24-hour window
    if a < b:
        return a <= t < b
    return t >= a or t < b


def night_of(now: datetime, start: str) -> str:
    """A key naming the night ``now`` belongs to (the date the window opened), to run once a night."""
    a = parse_hhmm(start)
    day = now.date()
    if now.time() < a:
        day = day.fromordinal(day.toordinal() - 1)
    return day.isoformat()
