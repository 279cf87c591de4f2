"""The classifier protocol: text (and document metadata) in, a validated Classification out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from ..models import Classification


@runtime_checkable
class Classifier(Protocol):
    """Anything that classifies one conversation.

    ``classify`` raises :mod:`batch_processor.errors` types: retryable ones (TRANSIENT,
    RATE_LIMIT, RESOURCE) are retried by the pipeline, CONFIGURATION stops the run, and DATA or
    PERMANENT mark the document failed. ``name`` and ``version`` are stored with each result.
    """

    name: str
    version: str

    async def classify(self, text: str, metadata: Mapping[str, Any]) -> Classification:
        """Classify one conversation's text."""
        ...

    async def aclose(self) -> None:
        """Release connections or other resources."""
        ...
