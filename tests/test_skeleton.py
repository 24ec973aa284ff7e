import subprocess
import sys

import pytest

from vfer.classes import EMOTIONS_4, parse_classes
from vfer.heads_spec import count_params, ifer_spec, vfer_spec
from vfer.topics import Topics, check_node_id


def test_paper_parameter_counts_from_the_weight_table() -> None:
    assert count_params(ifer_spec(6))["trainable"] == 662_534
    v = count_params(vfer_spec(6))
    assert (v["trainable"], v["non_trainable"]) == (208_582, 2_944)


def test_parse_classes() -> None:
    assert parse_classes("4") == EMOTIONS_4
    assert parse_classes("a,b") == ("a", "b")
    with pytest.raises(ValueError, match="unique"):
        parse_classes("a,a")
    with pytest.raises(ValueError, match="at least 2"):
        parse_classes("a")


def test_topics_and_node_ids() -> None:
    t = Topics()
    assert t.node_update("pi-7") == "fedvfer/nodes/pi-7/update"
    assert t.node_of("fedvfer/nodes/pi-7/update") == "pi-7"
    assert t.node_of("other/nodes/pi-7/update") is None
    for bad in ["", "a/b", "+", "#", "x" * 65]:
        with pytest.raises(ValueError):
            check_node_id(bad)


@pytest.mark.parametrize("role", ["edge_node", "broker_aggregator", "training", "provisioning"])
def test_every_role_has_a_help(role: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", role, "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage:" in out.stdout
