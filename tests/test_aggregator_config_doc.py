"""docs/aggregator-config.md stays true to the aggregator's config model."""

from __future__ import annotations

from pathlib import Path

from broker_aggregator.cli import config_reference
from broker_aggregator.config import AggregatorConfig
from vfer.config_io import section_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "aggregator-config.md"


def test_aggregator_reference_in_docs_is_current() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert config_reference() in doc, (
        "docs/aggregator-config.md is stale: python -m broker_aggregator config-reference"
    )


def test_every_aggregator_key_is_documented() -> None:
    text = config_reference()
    for name, field in AggregatorConfig.model_fields.items():
        model = section_model(field.annotation)  # a section, optional ones included
        sub = model.model_fields if model is not None else None
        if sub is None:
            assert f"| `{name}` |" in text
            continue
        assert f"## {name}\n" in text
        for key in sub:
            assert f"| `{name}.{key}` |" in text


def test_documented_keys_load_with_the_documented_defaults() -> None:
    # the doc's claim: every key has a default except the signing key (or the dev flag)
    cfg = AggregatorConfig.model_validate({"insecure_unsigned": True})
    assert cfg.weighting == "mean"
    assert "`insecure_unsigned` | bool | `false`" in config_reference()


def test_the_secret_share_group_never_reaches_the_log() -> None:
    from vfer.config_io import masked_dump

    cfg = AggregatorConfig.model_validate(
        {"insecure_unsigned": True, "share_group": "fedvfer-agg-0123456789abcdef0123456789abcdef"}
    )
    dumped = masked_dump(cfg)
    assert dumped["share_group"] == "**********"
    assert "0123456789abcdef" not in repr(dumped)
    assert dumped["worker_id"] == "agg-1"  # nothing else is hidden
