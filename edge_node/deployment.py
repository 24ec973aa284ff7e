"""Where a kiosk may stand: the deployment section of node.yaml and the EU AI Act's prohibition."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PROHIBITED_CONTEXTS = {
    "workplace": "the workplace",
    "education": "education institutions",
}
ART_5_1_F = (
    "Art. 5(1)(f) of the EU AI Act (Regulation (EU) 2024/1689) prohibits inferring the emotions of "
    "people in {where} since 2 February 2025, except for medical or safety reasons, which fedvfer is "
    "not built for; see docs/deployment.md"
)


class DeploymentConfig(BaseModel):
    """``deployment:`` in node.yaml: where the kiosk stands and who runs it (docs/deployment.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    context: Literal["public_space", "retail", "research", "other"] | None = Field(
        None,
        description="where the kiosk stands; required for a live camera. 'workplace' and "
        "'education' are refused (EU AI Act Art. 5(1)(f)); see docs/deployment.md",
    )
    operator: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="who runs this kiosk (the controller), named in the kiosk's notice",
    )
    notice: str | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="the kiosk's first-layer notice text (null: the built-in one)",
    )

    @field_validator("context", mode="before")
    @classmethod
    def _lawful(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in PROHIBITED_CONTEXTS:
            raise ValueError(ART_5_1_F.format(where=PROHIBITED_CONTEXTS[v.strip().lower()]))
        return v
