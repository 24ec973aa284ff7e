"""docs/config.md stays true to the node config model."""

from __future__ import annotations

from pathlib import Path

from edge_node.cli import config_reference
from edge_node.config import NodeConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_config_reference_in_docs_is_current() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert config_reference() in doc, (
        "docs/config.md is stale: python -m edge_node config-reference"
    )


def test_every_section_and_key_is_documented() -> None:
    text = config_reference()
    for name, field in NodeConfig.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        if sub is None:
            assert f"| `{name}` |" in text
            continue
        assert f"## {name}\n" in text
        for key, sub_field in sub.items():
            if getattr(sub_field.annotation, "model_fields", None) is not None:
                assert f"## {name}.{key}\n" in text  # a section inside a section
                continue
            assert f"| `{name}.{key}` |" in text
