"""One source for a fleet's classes, and where its kiosks may lawfully stand.

``init-fleet --bundle B`` (or ``--classes``) writes the classes into aggregator.yaml and every
node.yaml; the aggregator refuses initial weights whose head does not fit; the node refuses a
workplace or education deployment (EU AI Act Art. 5(1)(f)) and a live camera with no context.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from broker_aggregator.config import check_classes_fit_weights, load_aggregator_config
from edge_node.config import DeploymentConfig, load_node_config, require_deployment_context
from tests.support.bundles import build_bundle
from vfer.bundle import Bundle
from vfer.classes import EMOTIONS_4, EMOTIONS_6
from vfer.config_io import ConfigError


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def bundle4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("b4") / "bundle", classes=EMOTIONS_4).path


def test_init_fleet_from_a_bundle_writes_its_classes_everywhere(
    tmp_path: Path, bundle4: Path
) -> None:
    fleet = tmp_path / "fleet"
    res = _run(
        "provisioning",
        "init-fleet",
        "--dir",
        str(fleet),
        "--broker-host",
        "b.lan",
        "--bundle",
        str(bundle4),
        "--context",
        "public_space",
    )
    assert res.returncode == 0, res.stderr
    assert _run("provisioning", "add-node", "pi-1", "--dir", str(fleet)).returncode == 0
    agg = yaml.safe_load((fleet / "aggregator/aggregator.yaml").read_text())
    assert agg["classes"] == list(EMOTIONS_4)
    node = load_node_config(fleet / "nodes/pi-1/node.yaml")
    assert node.classes == list(EMOTIONS_4)
    assert node.deployment.context == "public_space"
    # the aggregator's config (as written) fits the bundle's head: no --classes anywhere
    cfg = load_aggregator_config(fleet / "aggregator/aggregator.yaml")
    check_classes_fit_weights(list(cfg.classes), bundle4 / "vfer_head.safetensors")


def test_init_fleet_refuses_a_workplace_and_needs_a_context(tmp_path: Path) -> None:
    base = ("provisioning", "init-fleet", "--broker-host", "b.lan")
    res = _run(*base, "--dir", str(tmp_path / "f1"), "--context", "workplace")
    assert res.returncode == 1 and "Art. 5(1)(f)" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "f1" / "fleet.json").exists()  # nothing half-made
    res = _run(*base, "--dir", str(tmp_path / "f2"))
    assert res.returncode != 0 and "--context" in res.stderr


def test_aggregator_refuses_classes_that_do_not_fit_its_initial_weights(
    tmp_path: Path, bundle4: Path
) -> None:
    weights = bundle4 / "vfer_head.safetensors"
    with pytest.raises(ConfigError, match="4-class head"):
        check_classes_fit_weights(list(EMOTIONS_6), weights)
    with pytest.raises(ConfigError, match="the order matters"):
        check_classes_fit_weights(list(reversed(EMOTIONS_4)), weights)
    res = _run(
        "broker_aggregator",
        "run",
        "--insecure-unsigned",
        "--broker",
        "mqtt://127.0.0.1:9",
        "--state-db",
        str(tmp_path / "agg.db"),
        "--initial-weights",
        str(weights),
    )
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith("Error: ") and "4-class head" in res.stderr
    assert not (tmp_path / "agg.db").exists()


@pytest.mark.parametrize("where", ["workplace", "education", "Workplace"])
def test_node_refuses_prohibited_contexts(tmp_path: Path, where: str) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"deployment:\n  context: {where}\n")
    with pytest.raises(ConfigError, match=r"Art\. 5\(1\)\(f\)") as err:
        load_node_config(cfg)
    assert "line 2" in str(err.value)


def test_node_run_refuses_a_workplace_config(tmp_path: Path) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text("deployment:\n  context: workplace\n")
    res = _run("edge_node", "run", "--config", str(cfg), "--max-frames", "1")
    assert res.returncode == 1
    assert res.stderr.startswith("Error: ") and "Art. 5(1)(f)" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_live_camera_needs_a_context_a_file_does_not() -> None:
    live = load_node_config(None, **{"camera.source": "0"})
    with pytest.raises(ConfigError, match=r"deployment\.context is required"):
        require_deployment_context(live, "opencv")
    require_deployment_context(live, "file")  # replaying a recording needs none
    ok = live.model_copy(update={"deployment": DeploymentConfig(context="research")})
    require_deployment_context(ok, "opencv")


def test_node_refuses_a_bundle_of_other_classes(tmp_path: Path, bundle4: Path) -> None:
    from edge_node.config import check_bundle_classes

    cfg = load_node_config(None, classes=list(EMOTIONS_6))
    with pytest.raises(ConfigError, match="classes"):
        check_bundle_classes(cfg, Bundle.load(bundle4, verify=False).classes)
    check_bundle_classes(load_node_config(None), Bundle.load(bundle4, verify=False).classes)
