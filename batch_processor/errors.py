"""The one exception hierarchy of batch_processor; its type decides what is retried.

Every failure the pipeline handles is one of these, each tagged with one of the user's error
categories (seed 004). Whether an operation is retried is decided by ``error.retryable`` alone
(``retry_now`` separates "retry in this call" from "retry later, from the retry queue")::

    BatchProcessorError                 (base, never raised directly)
    ├── TransientError       TRANSIENT       retried: timeouts, lost connections, 5xx
    │   └── InvalidReplyError    TRANSIENT   not retried now: re-asked, then the classify queue
    ├── RateLimitError       RATE_LIMIT      retried: 429, honour ``retry_after``
    ├── ResourceError        RESOURCE        retried: disk full, memory, server busy
    ├── ConfigurationError   CONFIGURATION   not retried: stops the run (bad URI, auth, settings)
    ├── DataError            DATA            not retried: the document is marked failed
    ├── PermanentError       PERMANENT       not retried: the document is marked failed
    ├── BudgetExhaustedError   (no category) the spend limit is reached: the document is
    │                                         given back untouched for the next run
    ├── Interrupted            (no category) a stop was asked for while waiting out an
    │                                         outage: not a failure, the run ends cleanly
    └── LostLeaseError         (no category) another worker took the document over: this
                                              worker's write is dropped and counted, not retried

Code outside this module raises these (the MongoDB and classifier modules translate their
libraries' exceptions), so that no other module needs to know pymongo's or openai's errors.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

from batch_processor.redaction import redact_text


class ErrorCategory(StrEnum):
    """The user's error categories; stored with every failed document and dead-letter entry."""

    TRANSIENT = "TRANSIENT"
    RATE_LIMIT = "RATE_LIMIT"
    RESOURCE = "RESOURCE"
    CONFIGURATION = "CONFIGURATION"
    DATA = "DATA"
    PERMANENT = "PERMANENT"


class BatchProcessorError(Exception):
    """Base of every error batch_processor raises on purpose."""

    category: ErrorCategory = ErrorCategory.PERMANENT
    retryable: bool = False
    #: For a retryable error: retry at once with backoff (True) or only later, from the queue.
    retry_now: bool = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Seconds the remote side asked us to wait before the next attempt, if it said.
        self.retry_after = retry_after


class TransientError(BatchProcessorError):
    """A failure that may well succeed if tried again shortly (network, timeout, 5xx)."""

    category = ErrorCategory.TRANSIENT
    retryable = True


class RateLimitError(BatchProcessorError):
    """The remote side refused for now (429); ``retry_after`` says how long to wait if known."""

    category = ErrorCategory.RATE_LIMIT
    retryable = True


class InvalidReplyError(TransientError):
    """A reply that stayed invalid (not JSON, label outside the taxonomy) after its re-asks.

    The classifier already asked again a bounded number of times; another immediate round would
    only multiply the calls, so the document goes to the classify retry queue instead.
    """

    retry_now = False


class ResourceError(BatchProcessorError):
    """A local or remote resource is exhausted (disk full, memory, server overloaded)."""

    category = ErrorCategory.RESOURCE
    retryable = True


class ConfigurationError(BatchProcessorError):
    """The run cannot work as configured (bad URI, credentials, settings): stop, do not retry."""

    category = ErrorCategory.CONFIGURATION


class DataError(BatchProcessorError):
    """The document cannot be classified as it is (missing, empty or invalid text)."""

    category = ErrorCategory.DATA


class PermanentError(BatchProcessorError):
    """An error that will not go away by retrying; the document is marked failed."""

    category = ErrorCategory.PERMANENT


class BudgetExhaustedError(BatchProcessorError):
    """The run's spend reached ``--budget-usd``: take no new documents, leave them for later.

    Not a failure of any document: the pipeline gives the document back (its claim released)
    and stops taking new ones, while requests already sent finish and are stored.
    """


class Interrupted(BatchProcessorError):
    """A stop (SIGTERM) came while waiting for MongoDB to come back: end cleanly, not failed."""


class LostLeaseError(BatchProcessorError):
    """Another worker took the document over (this worker's lease expired): the write is fenced.

    Not a failure of the document, which now belongs to the other worker: this worker's result
    or mark is dropped and counted as ``lost_lease``.
    """


class UnfinishedJobError(BatchProcessorError):
    """A previous job did not finish and the run was started without ``--recover``."""

    category = ErrorCategory.CONFIGURATION


def categorize(error: BaseException) -> ErrorCategory:
    """Return the error category of any exception; unknown exceptions are PERMANENT.

    Unknown exceptions (a bug in a classifier, say) are treated as permanent for the document
    at hand, so that bad data or a bad reply never crashes the daemon or loops forever.
    """
    if isinstance(error, BatchProcessorError):
        return error.category
    if isinstance(error, TimeoutError | ConnectionError):
        return ErrorCategory.TRANSIENT
    if isinstance(error, MemoryError):
        return ErrorCategory.RESOURCE
    if isinstance(error, OSError):
        return ErrorCategory.RESOURCE
    return ErrorCategory.PERMANENT


def is_retryable(error: BaseException) -> bool:
    """Whether an operation that raised ``error`` may succeed if tried again."""
    if isinstance(error, BatchProcessorError):
        return error.retryable
    return categorize(error) in {ErrorCategory.TRANSIENT, ErrorCategory.RESOURCE}


def is_retryable_now(error: BaseException) -> bool:
    """Whether ``error`` is retried within the same call (with backoff), not only later."""
    if isinstance(error, BatchProcessorError):
        return error.retryable and error.retry_now
    return is_retryable(error)


def describe(error: BaseException) -> str:
    """A one-line description of ``error`` for logs, documents and dead-letter entries.

    Secrets in it (a URL's password, an API key) are masked: this is the string that is stored.
    """
    text = str(error).strip().splitlines()
    first = redact_text(text[0]) if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def first_error(error: BaseException) -> BaseException:
    """The first real error inside an exception group (a TaskGroup raises groups)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        inner = [e for e in error.exceptions if not isinstance(e, asyncio.CancelledError)]
        error = (inner or list(error.exceptions))[0]
    return error
