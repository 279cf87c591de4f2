"""Translating the openai SDK's errors into batch_processor's categories, and reading 429 waits.

The user's strategies (seed 004) follow from the category: TRANSIENT (timeouts, connection
errors, 5xx) is retried with jittered backoff; RATE_LIMIT waits as long as the provider says;
CONFIGURATION (401, 403, unknown model, exhausted quota) stops the run; DATA (context too long,
other 400s about the input) is shortened once or dead-lettered; anything else is PERMANENT.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from batch_processor.errors import (
    BatchProcessorError,
    ConfigurationError,
    DataError,
    PermanentError,
    RateLimitError,
    TransientError,
)
from batch_processor.models import utcnow

if TYPE_CHECKING:  # the SDK is loaded on demand (see llm/sdk.py)
    import openai

#: 400s about these request parameters are our configuration, not the document.
CONFIG_PARAMS = frozenset(
    {"model", "temperature", "max_tokens", "max_completion_tokens", "messages.role", "seed"}
)
_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_CONTEXT = re.compile(r"maximum context length is (\d+) tokens.*?(\d+) tokens", re.I | re.S)


class ContextTooLongError(DataError):
    """The prompt does not fit the model's context: ``limit`` and ``used`` tokens, if reported."""

    def __init__(self, message: str, *, limit: int | None = None, used: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.used = used


class ResponseFormatUnsupportedError(ConfigurationError):
    """The endpoint rejected our ``response_format``; in auto mode the next format is tried."""


class OverloadedError(TransientError):
    """503/529: the provider is overloaded; the governor narrows its window as for a 429."""


@dataclass(frozen=True, slots=True)
class Translated:
    """An SDK error as our error, and what it says about the provider's limits.

    ``overloaded``: the provider asks for less (429, 503). ``unserved``: the request never got
    a hearing (connection failed, or a 5xx other than overload), so it is not counted against
    the requests-per-minute budget.
    """

    error: BatchProcessorError
    overloaded: bool = False
    unserved: bool = False


def parse_duration(text: str) -> float | None:
    """Seconds in an OpenAI reset duration such as ``"1s"``, ``"6m0s"``, ``"120ms"``, ``"2.5"``."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = list(_DURATION.finditer(text))
    if not parts or "".join(p.group(0) for p in parts) != text:
        return None
    return sum(float(p["value"]) * _UNIT_SECONDS[p["unit"]] for p in parts)


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """How long a 429 (or 503) asks us to wait, in seconds, from the reply's headers.

    ``retry-after-ms`` is the most precise; then ``retry-after`` (seconds or an HTTP date); then
    the ``x-ratelimit-reset-*`` of the exhausted limit (both if neither says it is exhausted).
    Waits beyond a minute are honoured as given.
    """
    lower = {key.lower(): value for key, value in headers.items()}
    if (ms := lower.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    if (value := lower.get("retry-after")) is not None:
        seconds = parse_duration(value)
        if seconds is not None:
            return seconds
        try:
            return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
        except (TypeError, ValueError):
            pass
    resets = {}
    for kind in ("requests", "tokens"):
        reset = lower.get(f"x-ratelimit-reset-{kind}")
        seconds = parse_duration(reset) if reset is not None else None
        if seconds is not None:
            resets[kind] = seconds
    exhausted = [v for k, v in resets.items() if lower.get(f"x-ratelimit-remaining-{k}") == "0"]
    chosen = exhausted or list(resets.values())
    return max(chosen) if chosen else None


def translate(exc: openai.OpenAIError, *, timeout: float) -> Translated:
    """Our error for an SDK error (the message never includes request contents or keys)."""
    import openai  # loaded already: it raised ``exc``

    refused = _not_connected(exc)
    if refused is not None:
        unreachable = TransientError(f"cannot reach the LLM endpoint: {refused}")
        return Translated(unreachable, unserved=True)
    if isinstance(exc, openai.APITimeoutError):
        return Translated(TransientError(f"LLM request timed out after {timeout:g} s"))
    if isinstance(exc, openai.APIStatusError):
        return _translate_status(exc)
    if isinstance(exc, openai.APIResponseValidationError):
        return Translated(TransientError(f"malformed response from the LLM endpoint: {exc}"))
    return Translated(PermanentError(f"LLM client error: {_first_line(exc)}"))


def _translate_status(exc: openai.APIStatusError) -> Translated:
    status = exc.status_code
    detail = f"LLM endpoint answered {status}: {_message(exc)}"
    code = str(getattr(exc, "code", "") or "")
    wait = retry_after_from_headers(exc.response.headers)
    if status == 429:
        if code == "insufficient_quota":
            return Translated(ConfigurationError(f"{detail} (the account's quota is used up)"))
        return Translated(RateLimitError(detail, retry_after=wait), overloaded=True)
    if status in {401, 403}:
        return Translated(ConfigurationError(f"{detail} (check llm_api_key and its access)"))
    if status == 404:
        return Translated(ConfigurationError(f"{detail} (check llm_model and llm_base_url)"))
    if status in {400, 413, 422}:
        return Translated(_bad_request(exc, detail, code))
    if status in {503, 529}:
        return Translated(OverloadedError(detail, retry_after=wait), overloaded=True)
    if status >= 500 or status in {408, 409}:
        return Translated(TransientError(detail, retry_after=wait), unserved=status >= 500)
    return Translated(PermanentError(detail))


def _bad_request(exc: openai.APIStatusError, detail: str, code: str) -> BatchProcessorError:
    message = _message(exc)
    param = str(getattr(exc, "param", "") or "")
    lowered = message.lower()
    if code == "context_length_exceeded" or "context length" in lowered or exc.status_code == 413:
        match = _CONTEXT.search(message)
        if match:
            return ContextTooLongError(detail, limit=int(match[1]), used=int(match[2]))
        return ContextTooLongError(detail)
    if param.startswith("response_format") or "response_format" in lowered:
        return ResponseFormatUnsupportedError(detail)
    if param in CONFIG_PARAMS:
        return ConfigurationError(f"{detail} (parameter {param}: check the llm_* settings)")
    return DataError(detail)


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:300]
    return _first_line(exc)[:300]


def _not_connected(exc: openai.OpenAIError) -> str | None:
    """Why no connection was made, when none was: the request never reached the provider.

    The SDK's aiohttp transport reports a refused or unresolvable connection as a *timeout*
    (its ``ConnectTimeout`` wraps aiohttp's ``Cannot connect to host``), so the cause decides,
    not the SDK's class: a refusal must not read as a slow provider, nor count as served.
    """
    import openai

    cause = str(exc.__cause__ or "")
    if "Cannot connect to host" in cause:
        host = cause.removeprefix("Cannot connect to host ").split(" ", 1)[0]
        reason = cause.rsplit("[", 1)[-1].rstrip("]") if "[" in cause else cause
        if reason.startswith("Connect call failed"):
            reason = "connection refused"
        return f"{host}: {reason}"
    if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
        detail = _first_line(exc.__cause__) if exc.__cause__ else _first_line(exc)
        return detail.replace("All connection attempts failed", "connection refused")
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
