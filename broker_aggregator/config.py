"""The aggregator's one config model (``aggregator.yaml``), partly written by ``provisioning``.

Secrets stay out of the YAML: the broker password and the Ed25519 signing key are files named
here. Unknown keys are rejected; every field says what it is and what values it allows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broker_aggregator.central_dp import CentralPrivacyConfig
from broker_aggregator.robust import Rule
from broker_aggregator.secure_config import SecureAggregationConfig
from vfer.classes import EMOTIONS_6, validate_classes
from vfer.config_io import apply_overrides, load_yaml_model, validate_model
from vfer.messages import MAX_CLIPS, Personalization
from vfer.ops_http import MetricsConfig
from vfer.topics import DEFAULT_PREFIX, Topics, check_node_id


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoundPolicyConfig(_Section):
    min_submissions: int = Field(
        2, ge=1, le=1_000_000, description="close at the deadline only with at least this many"
    )
    max_submissions: int = Field(
        100, ge=1, le=1_000_000, description="close as soon as this many nodes submitted"
    )
    deadline_s: float = Field(
        3600.0,
        gt=0,
        le=30 * 86400,
        description="seconds a round stays open (extended by as much when short of the minimum)",
    )
    rounds: int = Field(0, ge=0, description="rounds to run before exiting (0: forever)")

    @model_validator(mode="after")
    def _order(self) -> RoundPolicyConfig:
        if self.min_submissions > self.max_submissions:
            raise ValueError("round.min_submissions must not exceed round.max_submissions")
        return self


class AggregatorConfig(_Section):
    """Everything ``python -m broker_aggregator run`` needs; see docs/mqtt.md."""

    broker_url: str = Field(
        "mqtt://127.0.0.1:1883", description="mqtt:// or mqtts:// URL of the broker"
    )
    username: str | None = Field(None, description="broker user name")
    password_file: Path | None = Field(None, description="file holding the broker password")
    ca_file: Path | None = Field(None, description="CA certificate for mqtts://")
    signing_key_file: Path | None = Field(
        None, description="Ed25519 private key (PKCS8 PEM) that signs the central v"
    )
    insecure_unsigned: bool = Field(
        False, description="dev only: publish the central v unsigned when no signing key is given"
    )
    topic_prefix: str = Field(DEFAULT_PREFIX, description="topic prefix shared by the fleet")
    worker_id: str = Field(
        "agg-1", description="this process's id among aggregator workers (a topic level)"
    )
    share_group: str = Field(
        "fedvfer-aggregators", description="MQTT 5 shared-subscription group of the workers"
    )
    state_db: Path = Field(
        Path("aggregator.db"), description="SQLite state: rounds, submissions, centrals"
    )
    initial_weights: Path | None = Field(
        None,
        description="safetensors of v (a bundle's vfer_head.safetensors); needed on the first start",
    )
    classes: list[str] = Field(
        default_factory=lambda: list(EMOTIONS_6),
        description="class names, in the head's output order",
    )
    round: RoundPolicyConfig = Field(
        default_factory=RoundPolicyConfig, description="when a round closes"
    )  # type: ignore[arg-type]
    personalization: Personalization = Field(
        default_factory=Personalization, description="parameters nodes personalize with"
    )  # type: ignore[arg-type]
    weighting: Literal["mean", "samples"] = Field(
        "mean", description="'mean' as in the paper, or weighted by clips used"
    )
    rule: Rule = Field(
        "mean",
        description="aggregation rule: 'mean' (FedAvg, as in the paper), or a robust one: "
        "'median' (coordinate-wise), 'trimmed_mean', 'krum'. Robust rules need a single "
        "worker and ignore 'weighting'",
    )
    robust_fraction: float = Field(
        0.2,
        ge=0,
        lt=0.5,
        description="share of updates a robust rule assumes hostile: trimmed at each end by "
        "trimmed_mean, Krum's f",
    )
    max_weight_share: float = Field(
        0.2,
        gt=0,
        le=1,
        description="with weighting 'samples': no node's weight exceeds this share of the "
        "round's total (with N * share <= 1 every node weighs the same); 1 means no cap",
    )
    max_clips_per_class: int = Field(
        10_000,
        ge=1,
        le=MAX_CLIPS,
        description="reject an update claiming more clips than this for one class "
        "(reason clip_count)",
    )
    max_replacements_per_round: int = Field(
        5,
        ge=0,
        le=1000,
        description="stored copies a node may add to a round after its first (a higher seq "
        "replaces); beyond that an update is rejected as rate_limited",
    )
    max_update_norm: float = Field(
        100.0,
        gt=0,
        description="reject an update whose L2 distance from its base central exceeds this",
    )
    max_abs_weight: float = Field(
        1000.0, gt=0, description="reject an update with any |value| above this"
    )
    max_payload_bytes: int = Field(
        4_000_000,
        ge=1024,
        description="reject larger update payloads (the broker's max_packet_size should be a little larger)",
    )
    central_privacy: CentralPrivacyConfig | None = Field(
        None,
        description="central DP-FedAvg: clip each update, add Gaussian noise to the mean with a "
        "fixed denominator, epsilon in the signed central (docs/privacy.md); absent: off",
    )
    secure_aggregation: SecureAggregationConfig | None = Field(
        None,
        description="SecAgg+ over MQTT: nodes send masked updates, the aggregator learns only "
        "group sums and applies 'rule' to the group means (docs/secure-aggregation.md); "
        "absent: off, updates travel in the clear",
    )
    float16_transport: bool = Field(
        False, description="ask nodes to send float16 (half the bytes); float32 is always accepted"
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive")
    fsync_updates: bool = Field(
        False,
        description="fsync update bodies and the SQLite commit before acking: survives a power "
        "loss, not only a crash of the process (slower)",
    )
    mqtt_version: Literal["5", "3.1.1", "auto"] = Field(
        "auto",
        description="MQTT protocol: '5', '3.1.1', or 'auto' (5, falling back to 3.1.1 when the "
        "broker refuses 5). With 3.1.1 there is no $share: run a single worker",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig,
        description="Prometheus /metrics and the password-protected fleet page (leader only)",
    )  # type: ignore[arg-type]

    @field_validator("broker_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("mqtt://") or v.startswith("mqtts://")):
            raise ValueError("must start with mqtt:// or mqtts://")
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        return list(validate_classes(v))

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        Topics(v)
        return v

    @field_validator("worker_id", "share_group")
    @classmethod
    def _level(cls, v: str) -> str:
        return check_node_id(v)

    @model_validator(mode="after")
    def _key(self) -> AggregatorConfig:
        if self.signing_key_file is None and not self.insecure_unsigned:
            raise ValueError(
                "signing_key_file is required (or set insecure_unsigned: true for a dev setup)"
            )
        return self

    @model_validator(mode="after")
    def _secure_fits(self) -> AggregatorConfig:
        sa = self.secure_aggregation
        if sa is None:
            return self
        if self.central_privacy is not None:
            raise ValueError(
                "central_privacy and secure_aggregation cannot both be on: central DP clips "
                "each plaintext update, which secure aggregation never shows the aggregator; "
                "remove one of the two sections"
            )
        if self.round.min_submissions < sa.min_group_size:
            raise ValueError(
                f"round.min_submissions ({self.round.min_submissions}) must be at least "
                f"secure_aggregation.min_group_size ({sa.min_group_size}): a secure round "
                "needs one full group"
            )
        return self

    @model_validator(mode="after")
    def _privacy_fits(self) -> AggregatorConfig:
        dp = self.central_privacy
        if dp is None:
            return self
        if self.rule != "mean" or self.weighting != "mean":
            raise ValueError(
                "central_privacy needs rule: mean and weighting: mean (a node's influence must "
                f"be one clipped update), not rule {self.rule!r} with weighting {self.weighting!r}"
            )
        if not 1 <= self.round.rounds <= dp.rounds:
            raise ValueError(
                f"central_privacy covers {dp.rounds} rounds: round.rounds must be between 1 and "
                f"{dp.rounds} (it is {self.round.rounds}; 0 would run forever, unbounded)"
            )
        if self.round.max_submissions > dp.expected_nodes:
            raise ValueError(
                f"round.max_submissions ({self.round.max_submissions}) must not exceed "
                f"central_privacy.expected_nodes ({dp.expected_nodes}), the mean's denominator"
            )
        return self


def load_aggregator_config(
    path: str | os.PathLike[str] | None = None, **overrides: Any
) -> AggregatorConfig:
    """Load ``aggregator.yaml`` (or only defaults when ``path`` is None) with dotted-key overrides."""
    if path is None:
        return validate_model(
            AggregatorConfig, apply_overrides({}, overrides), source="command line"
        )
    return load_yaml_model(AggregatorConfig, path, **overrides)


def check_classes_fit_weights(classes: list[str], weights_path: Path) -> None:
    """Refuse to start a fleet whose classes do not fit its initial central v.

    K comes from the output layer's bias in the safetensors header; when the file sits in a model
    bundle (a ``manifest.json`` beside it) the class names and their order must match too.
    """
    import json

    from safetensors import safe_open

    from vfer.config_io import ConfigError

    try:
        with safe_open(str(weights_path), framework="numpy") as fh:
            tensors = set(fh.keys())
            shape = fh.get_slice("v_out.bias").get_shape() if "v_out.bias" in tensors else None
    except FileNotFoundError:
        raise ConfigError(f"initial_weights: no such file: {weights_path}") from None
    except Exception as exc:
        raise ConfigError(
            f"initial_weights: {weights_path} is not a safetensors file of v: {exc}"
        ) from None
    if shape is None or len(shape) != 1:
        raise ConfigError(f"initial_weights: {weights_path} holds no v output layer (v_out.bias)")
    if shape[0] != len(classes):
        raise ConfigError(
            f"classes: the config has {len(classes)} classes {classes}, but initial_weights "
            f"{weights_path} is a {shape[0]}-class head; set classes to the bundle's (or run "
            "provisioning init-fleet --bundle BUNDLE)"
        )
    manifest = weights_path.parent / "manifest.json"
    if manifest.is_file():
        try:
            names = json.loads(manifest.read_text(encoding="utf-8")).get("classes")
        except (OSError, ValueError):
            names = None
        if isinstance(names, list) and names != list(classes):
            raise ConfigError(
                f"classes: the config says {classes}, but the bundle beside initial_weights "
                f"({manifest}) says {names}; the order matters"
            )
