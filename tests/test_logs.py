"""Redaction of secrets in log events."""

from __future__ import annotations

from batch_processor.service.logs import MASK, redact, register_secret


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
