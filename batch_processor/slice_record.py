"""The record of one slice sent to the provider's Batch API, kept in MongoDB.

A slice is up to ``batch_route_max_requests`` documents claimed under one claim token and sent
as one provider batch. Its record (in the ``provider_batches_collection``) is written before
each step, so any worker can resume it: what was claimed (the token), what was sent (the
provider's file and batch ids), how far it came (the stage), who works on it (``owner``, with
a lease renewed while it does) and what it produced (counts, tokens, cost).

Stages, in order: ``claiming`` (the token recorded, documents being claimed), ``written`` (the
request file built), ``uploaded`` (``file_id``), ``submitted`` (``batch_id``), ``downloaded``
(the batch ended; its result files known), ``stored`` (results in MongoDB; only the provider's
files remain to delete), ``finished`` (kept for ``status`` and for the orphan check).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from batch_processor.models import utcnow

NANOS_PER_USD = 1_000_000_000


class Stage(StrEnum):
    """How far a slice has come (see the module docstring)."""

    CLAIMING = "claiming"
    WRITTEN = "written"
    UPLOADED = "uploaded"
    SUBMITTED = "submitted"
    DOWNLOADED = "downloaded"
    STORED = "stored"
    FINISHED = "finished"


class SliceRecord(BaseModel):
    """One slice: its claim, the provider's ids, its stage, its owner and what it produced."""

    slice_id: str
    job_id: str
    owner: str = Field(description="The worker working on the slice (its route's worker id).")
    lease_until: datetime = Field(default_factory=utcnow)
    claim: str = Field(description="The claim token every document of the slice is held under.")
    stage: Stage = Stage.CLAIMING
    documents: int = 0
    requests: int = 0
    request_bytes: int = 0
    sha256: str = ""
    file_id: str | None = None
    batch_id: str | None = None
    batch_status: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    stored: int = 0
    online: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = Field(default=0, description="What the batch's answers cost, in 1e-9 USD.")
    taken_from: list[str] = Field(default_factory=list, description="Earlier owners, in order.")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def filename(self) -> str:
        """The name its request file is uploaded under (how an upload is found again)."""
        return f"{self.slice_id}.jsonl"

    @property
    def cost_usd(self) -> float:
        """What the batch's answers cost, in dollars (for display)."""
        return self.cost_nanos / NANOS_PER_USD

    @property
    def unfinished(self) -> bool:
        """Whether the slice still has work (or provider files) left."""
        return self.stage is not Stage.FINISHED

    def expired(self, now: datetime) -> bool:
        """Whether its owner's lease has run out (the owner is presumed dead)."""
        return self.lease_until < now
