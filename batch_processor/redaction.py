"""Redaction: secrets never leave the process in a log line, a stored error or a report.

:func:`redact_text` masks credentials inside any URL (``scheme://user:password@``), secret query
parameters (Azure's ``?api-key=``, ``token=``, ``sig=``...), bearer tokens, ``sk-`` keys, and
every literal secret registered with :func:`register_secret` (the configured MongoDB password
and API keys, percent-encoded and decoded). It is applied by the log processor and by
:func:`batch_processor.errors.describe`, through which every error string that is stored
(MongoDB failure marks, retry-queue entries, the dead letter) is made.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "**********"
SECRET_PARAMS = (
    "api-key|api_key|apikey|key|token|access_token|auth|password|passwd|pwd|secret|"
    "sig|signature|client_secret"
)
_PATTERNS = (
    # userinfo of any URL: scheme://user:password@host
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@"), r"\1" + MASK + "@"),
    (re.compile(rf"([?&;](?:{SECRET_PARAMS})=)[^&#\s'\"]+", re.IGNORECASE), r"\1" + MASK),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-" + MASK),
)
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask every later occurrence of ``value`` (ignored if short or empty)."""
    if value and len(value) >= 4:
        _registered.add(value)
        decoded = unquote(value)
        if decoded != value and len(decoded) >= 4:
            _registered.add(decoded)


def register_url_secrets(url: str | None) -> None:
    """Register the password and the secret query values of a URL (a URI or an endpoint)."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        register_secret(parts.password)
        for name, value in parse_qsl(parts.query):
            if re.fullmatch(SECRET_PARAMS, name, re.IGNORECASE):
                register_secret(value)
    except ValueError:
        return


def redact_text(text: str) -> str:
    """``text`` with every secret it holds masked."""
    for secret in sorted(_registered, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
