"""node.yaml's ``adaptation.privacy``: bad privacy settings are refused at load, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.config import load_node_config
from vfer.config_io import ConfigError


def write(tmp_path: Path, privacy: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(f"adaptation:\n  privacy:\n{privacy}", encoding="utf-8")
    return path


def test_privacy_is_off_by_default_and_loads_when_on(tmp_path: Path) -> None:
    assert not load_node_config().adaptation.privacy.enabled
    cfg = load_node_config(write(tmp_path, "    enabled: true\n    epsilon_per_night: 1\n"))
    assert cfg.adaptation.privacy.enabled and cfg.adaptation.privacy.epsilon_per_night == 1.0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epsilon_per_night", "-1"),
        ("epsilon_per_night", "0"),
        ("epsilon_per_night", ".nan"),
        ("epsilon_per_night", "1e6"),
        ("epsilon_window", ".inf"),
        ("delta", "1"),
        ("delta", "0.5"),
        ("clip", "0"),
        ("colour", "red"),
    ],
)
def test_bad_privacy_values_are_refused_naming_the_key(
    tmp_path: Path, key: str, value: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_node_config(write(tmp_path, f"    enabled: true\n    {key}: {value}\n"))
    assert f"adaptation.privacy.{key}" in str(err.value)


def test_a_window_smaller_than_one_night_is_refused(tmp_path: Path) -> None:
    text = "    epsilon_per_night: 5\n    epsilon_window: 2\n"
    with pytest.raises(ConfigError, match="epsilon_window"):
        load_node_config(write(tmp_path, text))


def test_a_window_shorter_than_the_retention_age_is_refused(tmp_path: Path) -> None:
    """Every night that can read a stored visit must be inside the window that is composed."""
    path = write(tmp_path, "    enabled: true\n    window_nights: 7\n")
    with pytest.raises(ConfigError, match=r"window_nights \(7\) must be at least retention"):
        load_node_config(path)
    path.write_text(path.read_text() + "retention:\n  max_age_days: 7\n", encoding="utf-8")
    assert load_node_config(path).adaptation.privacy.window_nights == 7
    off = write(tmp_path, "    enabled: false\n    window_nights: 7\n")
    assert load_node_config(off).adaptation.privacy.window_nights == 7  # off: nothing promised
