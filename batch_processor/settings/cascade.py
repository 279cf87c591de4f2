"""The confidence cascade's settings (``--classifier cascade``), composed into ``Settings``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CascadeSettings(BaseModel):
    """How many documents the LLM sees, how the cascade learns, and the second tier."""

    cascade_llm_share: float = Field(
        default=0.35,
        ge=0,
        le=1,
        description="cascade: the share of documents sent to the LLM (the least sure ones, and "
        "the audit).",
    )
    cascade_confidence: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="cascade: send documents below this calibrated confidence to the LLM "
        "instead (replaces the share).",
    )
    cascade_audit_share: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="cascade: share of sure documents also sent to the LLM to measure agreement.",
    )
    cascade_learn_every: int = Field(
        default=2000,
        ge=0,
        description="cascade: train a new offline model after this many new LLM labels "
        "(0: only with 'model learn').",
    )
    cascade_models_collection: str = Field(
        default="classifier_models",
        min_length=1,
        description="Collection of the learnt offline model versions (shared by all workers).",
    )
    llm_escalation_model: str | None = Field(
        default=None,
        description="cascade: a larger model, asked when the first LLM is unsure or needed a "
        "repair.",
    )
    llm_escalation_below: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="cascade: ask the escalation model below this LLM confidence.",
    )
