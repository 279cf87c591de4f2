"""The lines of a provider batch: requests written for it, results read back from it.

A request line is ``{"custom_id", "method", "url", "body"}`` with the body the online route would
send. Its ``custom_id`` is the source id and the claim token, so a result line names both the
document and the claim it was requested under: a line of an older claim (the document was
given back and claimed again since) is recognised and not stored under the new claim.

A result line (output or error file) is sorted into a usable chat completion, or the reason
there is none: an error line (``batch_expired``, a 500), a status other than 200, or a line
that is not JSON. Those documents are classified online (see
:mod:`batch_processor.route.answers`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ENDPOINT = "/v1/chat/completions"
_SEPARATOR = "|"


def custom_id(doc_id: str, claim: str) -> str:
    """The request's ``custom_id``: source id and claim token (the token holds no ``|``)."""
    return f"{doc_id}{_SEPARATOR}{claim}"


def split_custom_id(value: str) -> tuple[str, str] | None:
    """(source id, claim token) of a ``custom_id``; None if it is not one of ours."""
    doc_id, separator, claim = value.rpartition(_SEPARATOR)
    return (doc_id, claim) if separator and doc_id and claim else None


def request_line(doc_id: str, claim: str, body: dict[str, Any]) -> bytes:
    """One line of the request file."""
    line = {"custom_id": custom_id(doc_id, claim), "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class ResultLine:
    """One result line: whose it is, and its chat completion or why there is none."""

    doc_id: str
    claim: str
    completion: dict[str, Any] | None
    problem: str | None
    expired: bool = False


def read_result_line(raw: bytes) -> ResultLine | None:
    """A result line of the output or error file; None if it names no document of ours."""
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(line, dict):
        return None
    ids = split_custom_id(str(line.get("custom_id", "")))
    if ids is None:
        return None
    doc_id, claim = ids
    error = line.get("error")
    if isinstance(error, dict):
        code = str(error.get("code") or "error")
        message = str(error.get("message") or "")[:200]
        expired = code in {"batch_expired", "batch_cancelled"}
        return ResultLine(doc_id, claim, None, f"Batch API line {code}: {message}", expired)
    response = line.get("response")
    if not isinstance(response, dict):
        return ResultLine(doc_id, claim, None, "Batch API line without a response")
    status = response.get("status_code")
    body = response.get("body")
    if status != 200 or not isinstance(body, dict):
        detail = body.get("error") if isinstance(body, dict) else None
        reason = str(detail.get("message")) if isinstance(detail, dict) else "no detail"
        return ResultLine(doc_id, claim, None, f"Batch API line answered {status}: {reason[:200]}")
    return ResultLine(doc_id, claim, body, None)
