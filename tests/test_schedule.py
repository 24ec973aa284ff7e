from datetime import datetime

from edge_node.schedule import in_window, night_of


def test_window_within_a_day() -> None:
    assert in_window(datetime(2026, 1, 1, 2, 0), "02:00", "05:00")
    assert in_window(datetime(2026, 1, 1, 4, 59), "02:00", "05:00")
    assert not in_window(datetime(2026, 1, 1, 5, 0), "02:00", "05:00")
    assert not in_window(datetime(2026, 1, 1, 1, 59), "02:00", "05:00")


def test_window_wrapping_midnight() -> None:
    assert in_window(datetime(2026, 1, 1, 23, 30), "23:00", "03:00")
    assert in_window(datetime(2026, 1, 2, 2, 59), "23:00", "03:00")
    assert not in_window(datetime(2026, 1, 2, 12, 0), "23:00", "03:00")
    assert in_window(datetime(2026, 1, 2, 12, 0), "00:00", "00:00")  # all day


def test_night_key_is_the_date_the_window_opened() -> None:
    assert night_of(datetime(2026, 1, 2, 1, 0), "23:00") == "2026-01-01"
    assert night_of(datetime(2026, 1, 1, 23, 30), "23:00") == "2026-01-01"
    assert night_of(datetime(2026, 1, 2, 3, 0), "02:00") == "2026-01-02"
