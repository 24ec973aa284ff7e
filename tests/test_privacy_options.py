"""``adaptation.privacy``: bounds refused at load naming the key, and delta against the visits."""

from __future__ import annotations

import math

import pytest
import yaml
from pydantic import ValidationError

from vfer.privacy.options import PrivacyError, PrivacyOptions


def load(text: str) -> PrivacyOptions:
    return PrivacyOptions.model_validate(yaml.safe_load(text))


def test_defaults_are_off_and_consistent() -> None:
    o = PrivacyOptions()
    assert not o.enabled and o.epsilon_per_night <= o.epsilon_window and 0 < o.delta < 1e-2
    assert load("enabled: true\nepsilon_per_night: 1\nepsilon_window: 5\n").epsilon_window == 5


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epsilon_per_night", -1),
        ("epsilon_per_night", 0),
        ("epsilon_per_night", math.nan),
        ("epsilon_per_night", math.inf),
        ("epsilon_per_night", 1e6),  # absurd: no guarantee at all
        ("epsilon_window", 0),
        ("epsilon_window", 1e9),
        ("delta", 0),
        ("delta", 0.5),
        ("delta", math.nan),
        ("clip", 0),
        ("clip", -1),
        ("clip", math.nan),
        ("window_nights", 0),
        ("clips_per_visit", 0),
        ("accountant", "moments"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        PrivacyOptions.model_validate({"enabled": True, key: value})
    assert key in str(err.value)


def test_unknown_keys_and_a_window_smaller_than_a_night_are_refused() -> None:
    with pytest.raises(ValidationError, match="epsilon_per_nite"):
        load("epsilon_per_nite: 3\n")
    with pytest.raises(ValidationError, match="epsilon_window"):
        load("epsilon_per_night: 3\nepsilon_window: 2\n")


def test_delta_must_stay_below_one_over_the_visits() -> None:
    o = PrivacyOptions(enabled=True, delta=1e-3)
    o.check_delta(999)
    for visits in (1000, 5000):
        with pytest.raises(PrivacyError, match=r"adaptation\.privacy\.delta=0\.001 must be below"):
            o.check_delta(visits)
    with pytest.raises(PrivacyError, match="at least one visit"):
        o.check_delta(0)
