"""Log events: secrets redacted, document ids plain."""

from __future__ import annotations

import json
import logging

import pytest

from batch_processor.runtime.logs import (
    MASK,
    configure_logging,
    plain_ids,
    redact,
    register_secret,
)


def test_secret_keys_uri_credentials_and_tokens_are_masked() -> None:
    """Keys that name secrets, passwords in URIs, bearer tokens and sk- keys are masked."""
    register_secret("hunter2-registered")
    event = redact(
        None,
        "info",
        {
            "event": "connect mongodb://app:pa55word@db:27017/x failed, key sk-abcdefghijklmnop",
            "api_key": "anything",
            "headers": {"Authorization": "Bearer abc.def"},
            "detail": ["Bearer xyz123", "token hunter2-registered here"],
            "tokens_in": 42,
        },
    )
    assert "pa55word" not in event["event"] and "sk-abcdefghijklmnop" not in event["event"]
    assert event["api_key"] == MASK and event["headers"]["Authorization"] == MASK
    assert event["detail"] == [f"Bearer {MASK}", f"token {MASK} here"]
    assert event["tokens_in"] == 42


def test_document_ids_are_logged_as_people_know_them() -> None:
    """ObjectIds print as their hex, numbers and strings as themselves, compound ids as JSON."""
    oid = "65f0c0ffee0123456789abcd"
    event = plain_ids(
        None,
        "warning",
        {
            "doc_id": json.dumps({"$oid": oid}),
            "doc_ids": [
                json.dumps({"$numberInt": "7"}),
                json.dumps("ticket-9"),
                '{"a": 1, "b": 2}',
            ],
        },
    )
    assert event["doc_id"] == oid
    assert event["doc_ids"] == ["7", "ticket-9", '{"a": 1, "b": 2}']


def test_standard_logging_records_are_one_json_line_each(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Records of the logging module (pymongo's, asyncio's) are JSON lines, redacted."""
    configure_logging("INFO", "json")
    try:
        raise ConnectionError("monitor lost mongodb://app:pa55word@db:27017")
    except ConnectionError:
        logging.getLogger("pymongo.client").exception("background task failed")
    logging.getLogger("pymongo.command").info("a debug-level chatter line")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "background task failed" and record["logger"] == "pymongo.client"
    assert record["exception"][0]["exc_type"] == "ConnectionError"
    assert "pa55word" not in lines[0]


def test_no_color_turns_the_console_colours_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal gets colours unless ``NO_COLOR`` is set (https://no-color.org)."""
    from batch_processor.runtime.logs import colours_wanted

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert colours_wanted(tty=True) and not colours_wanted(tty=False)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colours_wanted(tty=True)
