"""deploy/docker: the compose file validates, and its containers run the simulator's own commands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "deploy" / "docker" / "docker-compose.yml"


def dockerfile_entrypoint(name: str) -> list[str]:
    for line in (REPO / "deploy" / "docker" / name).read_text().splitlines():
        if line.startswith("ENTRYPOINT"):
            return list(yaml.safe_load(line.split(None, 1)[1]))
    raise AssertionError(f"{name} has no ENTRYPOINT")


def test_compose_config_is_valid() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip(
            "docker-compose is not installed and could not be (make system-deps installs it)"
        )
    out = subprocess.run(
        [exe, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert {"mosquitto", "setup", "aggregator", "node"} <= set(config["services"])
    node = config["services"]["node"]
    assert "/data" in [
        str(v).split(":")[0] if isinstance(v, str) else v.get("target") for v in node["volumes"]
    ]
    assert "healthcheck" in config["services"]["mosquitto"]  # the others' are in their images


def test_containers_run_the_commands_the_process_simulator_runs() -> None:
    from training.sim import simulate

    source = Path(simulate.__file__).read_text()
    # the simulator starts nodes with `python -m training sim-node` and the aggregator with
    # `python -m broker_aggregator run`: the images' entrypoints are exactly these commands
    assert dockerfile_entrypoint("Dockerfile.node") == ["python", "-m", "training", "sim-node"]
    assert '"-m", "training", "sim-node"' in source
    assert dockerfile_entrypoint("Dockerfile.aggregator") == [
        "python",
        "-m",
        "broker_aggregator",
        "run",
    ]
    assert '"-m", "broker_aggregator", "run"' in source
    compose = yaml.safe_load(COMPOSE.read_text())
    assert compose["services"]["setup"]["entrypoint"] == ["python", "-m", "training", "sim-setup"]
    assert "--slot" in compose["services"]["node"]["command"]


def test_node_and_aggregator_healthchecks_exist() -> None:
    for name in ("Dockerfile.node", "Dockerfile.aggregator"):
        assert "HEALTHCHECK" in (REPO / "deploy" / "docker" / name).read_text()
