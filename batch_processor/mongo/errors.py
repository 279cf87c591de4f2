"""pymongo's exceptions, translated into :mod:`batch_processor.errors` (which decide retries)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

from pymongo import errors as mongo_errors

from batch_processor.errors import (
    BatchProcessorError,
    ConfigurationError,
    DataError,
    PermanentError,
    ResourceError,
    TransientError,
)

_AUTH_CODES = {13, 18}  # Unauthorized, AuthenticationFailed
DATA_CODES = {121, 10334, 17419, 2}  # validation failed, BSON too large, bad value
DUPLICATE_KEY = 11000
# Codes that say "the server or the cursor went away; try again": a restart loses every open
# cursor (CursorNotFound 43, CursorKilled 237), a step-down or shutdown interrupts operations.
_TRANSIENT_CODES = {
    6,  # HostUnreachable
    7,  # HostNotFound
    43,  # CursorNotFound
    89,  # NetworkTimeout
    91,  # ShutdownInProgress
    189,  # PrimarySteppedDown
    237,  # CursorKilled
    9001,  # SocketException
    10107,  # NotWritablePrimary
    11600,  # InterruptedAtShutdown
    11602,  # InterruptedDueToReplStateChange
    13435,  # NotPrimaryNoSecondaryOk
    13436,  # NotPrimaryOrSecondary
}


_TIMEOUTS = re.compile(r" \(configured timeouts: [^)]*\)")
_CONNECT_FAILED = re.compile(r"\[Errno (\d+)\] Connect call failed \([^)]*\)")


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Raise pymongo's errors during ``action`` as batch_processor errors."""
    try:
        yield
    except BatchProcessorError:
        raise
    except (mongo_errors.InvalidURI, mongo_errors.ConfigurationError) as exc:
        raise ConfigurationError(
            f"invalid setting mongodb_uri: {action}: {first_line(exc)}"
        ) from exc
    except mongo_errors.ServerSelectionTimeoutError as exc:
        raise TransientError(f"{action}: MongoDB unreachable: {unreachable(exc)}") from exc
    except (mongo_errors.AutoReconnect, mongo_errors.ConnectionFailure) as exc:
        # Covers NetworkTimeout and ServerSelectionTimeoutError (server down or unreachable).
        raise TransientError(f"{action}: MongoDB unreachable: {first_line(exc)}") from exc
    except (mongo_errors.ExecutionTimeout, mongo_errors.WTimeoutError) as exc:
        raise TransientError(f"{action}: MongoDB timed out: {first_line(exc)}") from exc
    except mongo_errors.WriteConcernError as exc:
        raise TransientError(f"{action}: write concern not met: {first_line(exc)}") from exc
    except mongo_errors.DocumentTooLarge as exc:
        raise DataError(f"{action}: document too large: {first_line(exc)}") from exc
    except mongo_errors.OperationFailure as exc:
        raise _operation_failure(action, exc) from exc
    except mongo_errors.PyMongoError as exc:
        raise PermanentError(f"{action}: {first_line(exc)}") from exc


def _operation_failure(action: str, exc: mongo_errors.OperationFailure) -> BatchProcessorError:
    if exc.code in _AUTH_CODES:
        return ConfigurationError(f"{action}: not authorised: {first_line(exc)}")
    if exc.has_error_label("RetryableWriteError") or exc.has_error_label("TransientTransaction"):
        return TransientError(f"{action}: {first_line(exc)}")
    if exc.code in _TRANSIENT_CODES:
        return TransientError(f"{action}: {first_line(exc)}")
    if exc.code == 14031:  # OutOfDiskSpace
        return ResourceError(f"{action}: MongoDB out of disk space")
    return PermanentError(f"{action}: {first_line(exc)}")


def unreachable(exc: mongo_errors.ServerSelectionTimeoutError) -> str:
    """Each server's address and why it could not be reached, on one short line.

    The driver's message adds each connection's timeouts and the whole topology description
    (kilobytes of it); an operator needs the host and the cause.
    """
    servers = str(exc).split(", Timeout:", 1)[0]
    servers = _TIMEOUTS.sub("", servers).replace("),", "), ")
    # "[Errno 111] Connect call failed ('127.0.0.1', 1)" says less than "Connection refused".
    servers = _CONNECT_FAILED.sub(lambda match: os.strerror(int(match[1])), servers)
    return " ".join(servers.split())[:500]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (driver messages run to many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def bulk_write_errors(exc: PermanentError, action: str) -> dict[int, tuple[int, str]]:
    """Per-operation errors of a failed unordered bulk write: {op index: (code, message)}.

    Raises ``exc`` again if it was not a bulk write error, and a TransientError if the write
    concern was not met (the whole bulk may be retried).
    """
    cause = exc.__cause__
    if not isinstance(cause, mongo_errors.BulkWriteError):
        raise exc
    details = cause.details
    if details.get("writeConcernErrors"):
        raise TransientError(f"{action}: write concern not met") from cause
    return {
        int(e["index"]): (int(e.get("code", 0)), str(e.get("errmsg", "")))
        for e in details.get("writeErrors", [])
    }
