"""deploy/systemd: the units run the agreed commands and pass `systemd-analyze verify`."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.image import UNITS_DIR
from provisioning.installer import UNITS, VENV

ALL = (*UNITS, "aggregator.service")
COMMANDS = {
    "edge-node.service": f"{VENV}/bin/python -m edge_node run --config /etc/fedvfer/node.yaml",
    "edge-node-adapt.service": f"{VENV}/bin/python -m edge_node adapt --config /etc/fedvfer/node.yaml --nightly",
    "aggregator.service": f"{VENV}/bin/python -m broker_aggregator run --config /etc/fedvfer/aggregator.yaml",
}


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS_DIR / name)
    return parser


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_services_run_the_agreed_command(name: str) -> None:
    assert _unit(name)["Service"]["ExecStart"] == COMMANDS[name]


def test_adaptation_runs_nightly_from_the_timer() -> None:
    timer = _unit("edge-node-adapt.timer")
    assert timer["Timer"]["Unit"] == "edge-node-adapt.service"
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:00:00"
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert _unit("edge-node-adapt.service")["Service"]["Type"] == "oneshot"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (a systemd host)")
    # The node's venv does not exist here: point ExecStart at this interpreter, same flags.
    for name in ALL:
        text = (UNITS_DIR / name).read_text().replace(f"{VENV}/bin/python", sys.executable)
        (tmp_path / name).write_text(text)
    res = subprocess.run(
        [tool, "verify", *(str(tmp_path / n) for n in ALL)], capture_output=True, text=True
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    # verify only warns about unknown keys and bad values; any word on our files is a defect.
    assert not [line for line in out.splitlines() if str(tmp_path) in line or ".service" in line], (
        out
    )


def test_verify_catches_a_bad_unit(tmp_path: Path) -> None:
    """The check above can fail: a unit with an unknown key is reported."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (a systemd host)")
    bad = tmp_path / "bad.service"
    bad.write_text(f"[Service]\nExecStart={sys.executable}\nExecStrat=oops\n")
    res = subprocess.run([tool, "verify", str(bad)], capture_output=True, text=True)
    assert "ExecStrat" in res.stdout + res.stderr
