"""Logging: structlog, JSON lines off a TTY, a readable console on one; secrets never shown.

Tracebacks are rendered without local variables (structlog's default ``dict_tracebacks``
renders locals, which leaked a MongoDB password and an API key in a measured test here), and
every event passes through :func:`redact`, which masks secret-looking keys, credentials inside
URIs, bearer tokens, ``sk-`` keys, and any literal secret registered with :func:`register_secret`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from batch_processor.plain_ids import plain_id
from batch_processor.redaction import MASK, redact_text, register_secret, register_url_secrets

__all__ = ["MASK", "configure_logging", "redact", "register_secret", "register_url_secrets"]

_SECRET_KEY = re.compile(
    r"(^|_)(pass|passwd|password|secret|token|api_key|apikey|authorization|uri|credentials?)$",
    re.IGNORECASE,
)


def _redact_value(key: str | None, value: Any) -> Any:
    if key is not None and _SECRET_KEY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(None, item) for item in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor that masks secrets anywhere in the event."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


#: Event keys that hold document ids (canonical extended JSON inside the pipeline).
_ID_KEYS = frozenset({"doc_id", "doc_ids"})


def plain_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor that prints document ids as people know them (no ``$oid``)."""
    for key in _ID_KEYS & event_dict.keys():
        value = event_dict[key]
        if isinstance(value, str):
            event_dict[key] = plain_id(value)
        elif isinstance(value, list | tuple):
            event_dict[key] = [plain_id(item) if isinstance(item, str) else item for item in value]
    return event_dict


class _StderrLogger:
    """Writes each line to the *current* ``sys.stderr`` (so rich's live display can wrap it)."""

    def msg(self, message: str) -> None:
        """Write one rendered line."""
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = error = critical = exception = msg


def colours_wanted(tty: bool) -> bool:
    """Colours on a terminal, unless ``NO_COLOR`` is set to anything (https://no-color.org)."""
    return tty and not os.environ.get("NO_COLOR")


#: Routine events a progress bar already shows: left out of a console log beside the bar.
SHOWN_BY_THE_BAR = frozenset({"batch finished"})


def _left_to_the_bar(
    _logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor that drops the routine lines a progress bar shows already.

    A 20,000-document demo logged 200 ``batch finished`` lines between the bar's redraws; the
    bar counts the documents and the summary the batches. Warnings and errors stay.
    """
    if method == "info" and event_dict.get("event") in SHOWN_BY_THE_BAR:
        raise structlog.DropEvent
    return event_dict


def configure_logging(
    level: str = "INFO",
    fmt: str = "auto",
    stream: TextIO | None = None,
    *,
    beside_a_bar: bool = False,
) -> None:
    """Configure structlog once for the process; ``fmt`` is auto, json or console.

    ``beside_a_bar``: a progress bar will be drawn under the console log, so the routine
    lines it shows are left out (they stay in a JSON log, which no bar accompanies).
    """
    tty = (stream or sys.stderr).isatty()
    console = fmt == "console" or (fmt == "auto" and tty)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        plain_ids,
    ]
    if console:
        renderer: list[Any] = [
            *([_left_to_the_bar] if beside_a_bar else []),
            structlog.processors.format_exc_info,
            redact,
            structlog.dev.ConsoleRenderer(
                colors=colours_wanted(tty), exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    else:
        renderer = [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact,
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_: _StderrLogger(),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(shared, renderer)


def _route_standard_logging(shared: list[Any], renderer: list[Any]) -> None:
    """Send the standard ``logging`` module's records through the same processors.

    pymongo's background tasks and asyncio's "exception was never retrieved" log there: one
    line each, redacted. Without a handler Python prints them as raw multi-line tracebacks
    outside the JSON log. Warnings and above only: pymongo's debug and info records are its own
    business.
    """
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


#: The name of the handler this module installs on the root logger (replaced when reconfigured).
_HANDLER_NAME = "batch_processor"


class _CurrentStderr:
    """A stream that writes to the *current* ``sys.stderr`` (tests and rich replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
