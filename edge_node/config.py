"""The edge node's one config model (``node.yaml``), also written by ``provisioning add-node``.

Secrets never sit in the YAML: the broker password and the kiosk operator password are read from
files named here (or the environment), and the effective config is logged with them masked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_node.deployment import DeploymentConfig
from edge_node.display import TeacherConfig
from edge_node.forget import ForgetConfig
from vfer.classes import validate_classes
from vfer.config_io import ConfigError, load_yaml_model, validate_model
from vfer.gate_signals import SIGNALS
from vfer.ops_http import MetricsConfig
from vfer.personalization_defaults import BALANCE, EPOCHS, LR, MIN_CLIPS, P_THRESHOLD, P
from vfer.privacy.options import PrivacyOptions
from vfer.topics import DEFAULT_PREFIX, check_node_id


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(_Section):
    source: str = Field(
        "picamera2",
        description="'picamera2', a webcam index ('0'), an rtsp:// or http:// URL, a video file or a folder of clips",
    )
    kind: Literal["auto", "picamera2", "opencv", "file", "folder"] = Field(
        "auto", description="how to open source; 'auto' guesses from its form"
    )
    width: int = Field(640, ge=64, le=4096, description="requested capture width (cameras)")
    height: int = Field(480, ge=64, le=4096, description="requested capture height (cameras)")
    fps: float = Field(15.0, gt=0, le=120, description="requested capture rate (cameras)")
    loop: bool = Field(False, description="files and folders: start again at the end")
    realtime: bool = Field(
        True, description="files and folders: pace at native fps (false: as fast as possible)"
    )
    retry_initial_s: float = Field(
        0.5, gt=0, le=60, description="live cameras: first reconnect delay (doubles each failure)"
    )
    retry_max_s: float = Field(
        30.0, gt=0, le=3600, description="live cameras: longest reconnect delay"
    )
    retry_attempts: int = Field(
        0, ge=0, description="live cameras: give up after this many failures in a row (0: never)"
    )


class FaceConfig(_Section):
    model: Path | None = Field(
        None,
        description="MediaPipe face_detection_short_range.tflite; null: $FEDVFER_FACE_MODEL, else <bundle>/../models/",
    )
    min_confidence: float = Field(0.7, gt=0, lt=1, description="detector score threshold")
    margin: float = Field(
        0.25, ge=0, le=1, description="extra border around the face box, as a fraction of its side"
    )
    select: Literal["largest", "tracked"] = Field(
        "largest", description="several faces: the largest, or the one nearest the previous face"
    )
    detect_every: int = Field(
        4,
        ge=1,
        le=30,
        description="run the detector every N frames and follow the box in between (1: every "
        "frame); a lost box is detected again at once. 4 keeps 99% of g's per-frame predictions "
        "(docs/performance.md)",
    )
    detector: Literal["litert", "mediapipe"] = Field(
        "litert",
        description="runtime for the detector model: litert (the interpreter that runs f; the "
        "same faces as MediaPipe's, about 70 MB less memory) or mediapipe (its Tasks "
        "FaceDetector) (docs/performance.md)",
    )


class ClipConfig(_Section):
    gap_s: float = Field(
        1.0, gt=0, le=60, description="a clip ends after the face is absent this long"
    )
    max_s: float = Field(10.0, gt=0, le=600, description="a clip is cut at this length")
    min_frames: int = Field(8, ge=1, le=10_000, description="shorter clips are discarded")


class RetentionConfig(_Section):
    max_age_days: float = Field(30.0, gt=0, description="clips older than this are deleted")
    max_bytes: int = Field(
        2_000_000_000, gt=0, description="oldest clips go first above this database size"
    )
    check_every_s: float = Field(
        600.0, gt=0, description="how often retention runs (also at start)"
    )
    thumbnails: bool = Field(False, description="opt-in: keep a few face thumbnails per clip")
    thumbnails_per_clip: int = Field(
        3, ge=1, le=20, description="thumbnails kept per clip when enabled"
    )
    thumbnail_max_age_days: float = Field(
        7.0, gt=0, description="thumbnails are deleted after this"
    )


class KioskConfig(_Section):
    enabled: bool = Field(True, description="serve the kiosk page")
    host: str = Field("127.0.0.1", description="address the kiosk page listens on")
    port: int = Field(8080, ge=0, le=65535, description="kiosk port (0: pick a free one)")
    preview_fps: float = Field(15.0, gt=0, le=60, description="camera preview rate on the page")
    operator_password_file: Path | None = Field(
        None, description="file holding the operator page password (none: operator page disabled)"
    )
    state_rate_hz: float = Field(
        10.0, gt=0, le=30, description="how often the page's state stream may push an update"
    )
    forget_timeout_s: float = Field(
        30.0, gt=0, le=600, description="how long 'forget me' waits for the node to delete clips"
    )
    allowed_hosts: list[str] | None = Field(
        None,
        max_length=64,
        description="Host header values the kiosk answers (name or address, optionally :port); anything else gets 421 "
        "before any route runs (DNS rebinding). null: the bind address, localhost and 127.0.0.1, each with and without the port",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        out = []
        for host in v:
            h = host.strip().lower()
            if not h or len(h) > 255 or any(c.isspace() or c in "/@?#" for c in h):
                raise ValueError(f"{host!r} is not a host name or address (with optional :port)")
            out.append(h)
        return out

    display: Literal["vfer", "ifer", "teacher", "ensemble"] = Field(
        "teacher",
        description="what the page shows: v, g, the bundle's external teacher, or the mean of g and the teacher; teacher/ensemble fall back to vfer without a teacher (docs/reproduce.md)",
    )


class FederationConfig(_Section):
    enabled: bool = Field(False, description="take part in federation rounds")
    broker_url: str = Field(
        "mqtt://127.0.0.1:1883", description="mqtt:// or mqtts:// URL of the broker"
    )
    username: str | None = Field(None, description="broker user name (default: the node id)")
    password_file: Path | None = Field(None, description="file holding the broker password")
    ca_file: Path | None = Field(None, description="CA certificate for mqtts://")
    cert_file: Path | None = Field(None, description="client certificate (certificate auth)")
    key_file: Path | None = Field(None, description="client private key (certificate auth)")
    fleet_public_key: Path | None = Field(
        None, description="Ed25519 public key that signs central bundles"
    )
    topic_prefix: str = Field(DEFAULT_PREFIX, description="topic prefix shared by the fleet")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive")
    mqtt_version: Literal["5", "3.1.1", "auto"] = Field(
        "auto", description="MQTT protocol: '5', '3.1.1', or 'auto' (5, else 3.1.1)"
    )
    min_central_version: int = Field(
        1,
        ge=1,
        le=2**53,
        description="install no central v older than this, even validly signed (a replayed "
        "old one); provisioning writes the fleet's version at the time the node was added",
    )
    identity_key_file: Path | None = Field(
        None,
        description="the node's Ed25519 identity key (PKCS8 PEM, 0600) for secure aggregation "
        "rounds; without it the node sits secure rounds out",
    )
    identity_voucher_file: Path | None = Field(
        None, description="the fleet's voucher for the identity key (identity_voucher.json)"
    )
    vouching_public_key: Path | None = Field(
        None, description="Ed25519 public key that vouches for the fleet's identity keys"
    )

    @field_validator("broker_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("mqtt://") or v.startswith("mqtts://")):
            raise ValueError("must start with mqtt:// or mqtts://")
        return v


class AdaptationConfig(_Section):
    enabled: bool = Field(True, description="personalize v overnight")
    window_start: str = Field("02:00", description="local time the nightly window opens (HH:MM)")
    window_end: str = Field("05:00", description="local time the nightly window closes (HH:MM)")
    p: int = Field(
        P,
        ge=0,
        le=10_000,
        description="at most P clips per class (paper: 15 CREMA-D, 50 MSP-IMPROV)",
    )
    p_threshold: float = Field(
        P_THRESHOLD, ge=0, le=1, description="drop clips whose pseudo-label confidence is below"
    )
    epochs: int = Field(EPOCHS, ge=1, le=100, description="fine-tuning epochs")
    lr: float = Field(LR, gt=0, le=1, description="Adam learning rate")
    min_clips: int = Field(
        MIN_CLIPS, ge=1, description="below this many selected clips, skip adaptation"
    )
    selection: Literal["paper", "balanced"] = Field(
        "balanced",
        description="'balanced' (default, measured better than the paper's rule): top P per class, then no "
        "class keeps more than balance_ratio times the smallest kept class; 'paper': top P per class "
        "only (Eq. 1) (docs/personalization.md)",
    )
    balance_ratio: float = Field(
        BALANCE,
        ge=1,
        le=100,
        description="selection 'balanced': the most one class may keep, per clip of the smallest",
    )
    l2sp: float = Field(
        0.0,
        ge=0,
        le=100,
        description="L2 pull towards the central v while fine-tuning (L2-SP); 0: the paper's plain cross-entropy",
    )
    gate: Literal["enforce", "report", "off"] = Field(
        "enforce",
        description="the safety gate on held-back clips (docs/personalization.md): 'enforce' keeps "
        "a failing head inactive and unsubmitted; 'report' only records the verdict (simulations, "
        "experiments); 'off': the paper's plain rule",
    )
    gate_min_classes: int = Field(
        2, ge=1, le=64, description="gate: the selected pseudo labels must cover this many classes"
    )
    gate_min_holdout: int = Field(
        6,
        ge=1,
        le=10_000,
        description="gate: fewer held-back clips than this skip the agreement check",
    )
    gate_agreement_tolerance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="gate: how much less the new head may agree with the teacher than the central",
    )
    gate_min_entropy_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="gate: the new head's predicted-class entropy must keep this share of the central's",
    )
    gate_max_class_share: float = Field(
        0.9, ge=0, le=1, description="gate: no class may take more of the new head's predictions"
    )
    gate_signal: Literal[SIGNALS] | None = Field(  # type: ignore[valid-type]
        None,
        description="gate: also block when this label-free signal on the held-back clips is above "
        "gate_signal_max (null: the signals are recorded only; docs/personalization.md)",
    )
    gate_signal_max: float = Field(0.0, ge=-1, le=1, description="gate: gate_signal's bound")
    teacher: Literal["g", "external", "ensemble"] = Field(
        "g",
        description="pseudo labels from g, the bundle's external teacher, or their mean (frames recorded without a teacher use g)",
    )
    trigger: Literal["window", "round"] = Field(
        "window",
        description="'window': once a night in the window; 'round': as soon as a federation round opens (simulation)",
    )
    privacy: PrivacyOptions = Field(default_factory=PrivacyOptions, description="visit-level DP")  # type: ignore[arg-type]

    @field_validator("window_start", "window_end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        parts = v.split(":")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError("must be HH:MM")
        h, m = int(parts[0]), int(parts[1])
        if not (0 <= h < 24 and 0 <= m < 60):
            raise ValueError("must be HH:MM with 00 <= HH < 24 and 00 <= MM < 60")
        return f"{h:02d}:{m:02d}"


class NodeConfig(_Section):
    """Everything one edge node needs; see docs/config.md."""

    node_id: str = Field(
        "node-1", description="unique id of this node in the fleet (a topic level)"
    )
    bundle: Path = Field(Path("bundle"), description="model bundle folder")
    classes: list[str] | None = Field(
        None,
        description="the fleet's classes in output order (written by provisioning); the node "
        "refuses a bundle whose classes differ. null: whatever the bundle has",
    )
    db: Path = Field(Path("fedvfer.db"), description="SQLite database of clips")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    overlap_stages: bool = Field(
        True,
        description="decode and detect the next frame in a thread while f, g and v run on this one",
    )
    camera: CameraConfig = Field(default_factory=CameraConfig, description="frame source")  # type: ignore[arg-type]
    face: FaceConfig = Field(default_factory=FaceConfig, description="face detection")  # type: ignore[arg-type]
    clips: ClipConfig = Field(default_factory=ClipConfig, description="clip segmentation")  # type: ignore[arg-type]
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig, description="what is kept and for how long"
    )  # type: ignore[arg-type]
    kiosk: KioskConfig = Field(default_factory=KioskConfig, description="local display page")  # type: ignore[arg-type]
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="the teacher")  # type: ignore[arg-type]
    federation: FederationConfig = Field(
        default_factory=FederationConfig, description="MQTT federation"
    )  # type: ignore[arg-type]
    adaptation: AdaptationConfig = Field(
        default_factory=AdaptationConfig, description="nightly personalization"
    )  # type: ignore[arg-type]
    deployment: DeploymentConfig = Field(
        default_factory=DeploymentConfig,
        description="where the kiosk stands and what it tells people",
    )  # type: ignore[arg-type]
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="Prometheus /metrics of this node"
    )  # type: ignore[arg-type]
    forget: ForgetConfig = Field(
        default_factory=ForgetConfig, description="what 'forget me' does besides deleting clips"
    )  # type: ignore[arg-type]

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, v: str) -> str:
        return check_node_id(v)

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else list(validate_classes(v))

    @model_validator(mode="after")
    def _consistent(self) -> NodeConfig:
        if self.clips.gap_s >= self.clips.max_s:
            raise ValueError("clips.gap_s must be shorter than clips.max_s")
        p, age = self.adaptation.privacy, self.retention.max_age_days
        if p.enabled and p.window_nights < age:  # a visit could be read by nights no window counts
            raise ValueError(
                f"adaptation.privacy.window_nights ({p.window_nights}) must be at least retention.max_age_days ({age:g}): every night that can read a stored visit must be counted (docs/privacy.md)"
            )
        return self


def check_bundle_classes(config: NodeConfig, bundle_classes: tuple[str, ...]) -> None:
    """Refuse a bundle whose classes are not the fleet's (``classes`` in node.yaml)."""
    if config.classes is not None and list(bundle_classes) != config.classes:
        raise ConfigError(
            f"classes: node.yaml says {config.classes}, but the bundle {config.bundle} has "
            f"{list(bundle_classes)}; install the fleet's bundle (the order matters)"
        )


def require_deployment_context(config: NodeConfig, source_kind: str) -> None:
    """A live camera films people: refuse it until the operator says where the kiosk stands.

    Files and folders (tests, simulations, replaying recordings) need no context.
    """
    if source_kind in ("picamera2", "opencv") and config.deployment.context is None:
        raise ConfigError(
            "deployment.context is required for a live camera: one of public_space, retail, "
            "research, other (workplace and education are prohibited by Art. 5(1)(f) of the EU "
            "AI Act); see docs/deployment.md"
        )


def load_node_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> NodeConfig:
    """Load ``node.yaml`` (or only defaults when ``path`` is None) with dotted-key overrides."""
    if path is None:
        from vfer.config_io import apply_overrides

        return validate_model(NodeConfig, apply_overrides({}, overrides), source="command line")
    return load_yaml_model(NodeConfig, path, **overrides)
