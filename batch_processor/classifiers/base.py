"""The classifier protocol: text (and document metadata) in, a validated classification out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from batch_processor.models import ClassifierOutput


@runtime_checkable
class Classifier(Protocol):
    """Anything that classifies one conversation.

    ``classify`` raises :mod:`batch_processor.errors` types: retryable ones (TRANSIENT,
    RATE_LIMIT, RESOURCE) are retried by the pipeline, CONFIGURATION stops the run, and DATA or
    PERMANENT mark the document failed, and BudgetExhaustedError gives the document back for a
    later run. ``name`` and ``version`` are stored with each result.
    """

    name: str
    version: str

    async def classify(self, text: str, metadata: Mapping[str, Any]) -> ClassifierOutput:
        """Classify one conversation's text; the output says what it cost and where it came from."""
        ...

    def summary(self) -> dict[str, Any]:
        """What the classifier adds to the run summary (tokens, cost, calls saved), or ``{}``."""
        ...

    async def aclose(self) -> None:
        """Release connections or other resources."""
        ...
