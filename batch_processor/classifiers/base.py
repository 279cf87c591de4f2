"""The classifier protocol: a conversation (and metadata) in, a validated classification out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from batch_processor.conversation import Conversation
from batch_processor.models import ClassifierOutput


@runtime_checkable
class Classifier(Protocol):
    """Anything that classifies one conversation: every label describes the customer.

    Four features are optional: an implementation that subclasses this protocol inherits
    their defaults (no cache scope, nothing to prefetch, warm up or check).

    ``classify`` raises :mod:`batch_processor.errors` types: retryable ones (TRANSIENT,
    RATE_LIMIT, RESOURCE) are retried by the pipeline, CONFIGURATION stops the run, and DATA or
    PERMANENT mark the document failed, and BudgetExhaustedError gives the document back for a
    later run. ``name`` and ``version`` are stored with each result.
    """

    name: str
    version: str

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """Classify one conversation's customer; the output says what it cost and where from.

        A plain string is one customer turn (:meth:`Conversation.of`).
        """
        ...

    def summary(self) -> dict[str, Any]:
        """What the classifier adds to the run summary (tokens, cost, calls saved), or ``{}``."""
        ...

    async def aclose(self) -> None:
        """Release connections or other resources."""
        ...

    @property
    def cache_scope(self) -> str | None:
        """What a cached answer depends on besides the text; None: not worth caching."""
        return None

    async def prefetch(self, texts: Sequence[Conversation | str]) -> None:
        """Prepare for a page's texts (the dedupe cache looks them all up in one query)."""
        return None

    async def warm_up(self) -> None:
        """Load what the first classification needs, while the first page is claimed."""
        return None

    async def check_endpoint(self, within: float = 10.0) -> str | None:
        """Check a remote endpoint once before the first claim; a warning to log, if any."""
        return None
