"""The LLM classifier's parts: the taxonomy file, 429 wait headers, and waits on injected time."""

from __future__ import annotations

import json
from dataclasses import replace
from email.utils import format_datetime
from pathlib import Path

import pytest

from batch_processor.classifiers import load_taxonomy
from batch_processor.conversation import Conversation
from batch_processor.errors import ConfigurationError, RateLimitError, TransientError
from batch_processor.llm.client import LLMClassifier
from batch_processor.llm.cost import SpendLedger
from batch_processor.llm.errors import parse_duration, retry_after_from_headers
from batch_processor.llm.governor import Governor
from batch_processor.llm.messages import shorten
from batch_processor.llm.reply import validate_reply
from batch_processor.models import utcnow
from batch_processor.retry import RetryPolicy
from batch_processor.service.classifier_setup import llm_options
from batch_processor.settings import Settings
from batch_processor.testing.simulator import Simulator, SimulatorConfig

from .test_governor import FakeClock

#: The LLM options of the default settings.
LLM_DEFAULTS = llm_options(Settings.model_construct())


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("120ms", 0.12), ("1h2m3.5s", 3723.5), ("2.5", 2.5)],
)
def test_reset_durations_are_parsed(text: str, seconds: float) -> None:
    """OpenAI's x-ratelimit-reset formats become seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


def test_retry_after_headers_in_order_of_precision() -> None:
    """retry-after-ms wins, then retry-after (seconds or date), then the exhausted reset."""
    assert retry_after_from_headers({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_from_headers({"Retry-After": "120"}) == 120.0
    in_a_minute = format_datetime(utcnow().replace(microsecond=0)).replace("+0000", "GMT")
    assert retry_after_from_headers({"retry-after": in_a_minute}) == pytest.approx(0, abs=1.5)
    headers = {
        "x-ratelimit-remaining-requests": "12",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert retry_after_from_headers(headers) == 360.0
    assert retry_after_from_headers({}) is None


def test_default_taxonomy_gives_a_strict_schema() -> None:
    """Every property is required, no extra ones are allowed, labels are enums."""
    taxonomy = load_taxonomy()
    schema = taxonomy.json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])
    assert schema["properties"]["category"]["enum"] == list(taxonomy.categories)
    assert set(taxonomy.emotions) == {
        "joy",
        "anger",
        "sadness",
        "fear",
        "surprise",
        "disgust",
        "neutral",
    }
    for label, description in taxonomy.categories.items():
        assert f"- {label}: {description}" in taxonomy.instructions(include_schema=False)


def test_reply_with_a_label_outside_the_taxonomy_is_rejected() -> None:
    """Validation names the field; a valid reply becomes a Classification."""
    taxonomy = load_taxonomy()
    reply = {
        "category": "billing",
        "sentiment": {"label": "negative", "score": -0.6},
        "urgency": "high",
        "emotion": "anger",
        "language": "en",
        "themes": ["double charge"],
        "summary": "Charged twice.",
        "confidence": 0.9,
    }
    assert validate_reply(taxonomy, json.dumps(reply)).category == "billing"
    with pytest.raises(ValueError, match="category"):
        validate_reply(taxonomy, json.dumps({**reply, "category": "hacked"}))
    with pytest.raises(ValueError):
        validate_reply(taxonomy, '{"category": "billing"')


def test_custom_taxonomy_file_and_its_errors(tmp_path: Path) -> None:
    """A custom file is loaded; a broken one is a configuration error naming the setting."""
    good = tmp_path / "taxonomy.toml"
    good.write_text(
        'name = "it"\nversion = "7"\n[categories]\nhardware = "Devices"\nsoftware = "Programs"\n'
        '[urgency]\nlow = "later"\nhigh = "now"\n'
    )
    taxonomy = load_taxonomy(good)
    assert taxonomy.version == "7" and list(taxonomy.categories) == ["hardware", "software"]
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\nversion = "1"\n[categories]\n"Bad Label" = "no"\n')
    with pytest.raises(ConfigurationError, match="taxonomy_file"):
        load_taxonomy(broken)


async def test_long_retry_after_is_waited_in_full_on_injected_time() -> None:
    """A 429 asking for 90 s (beyond the 60 s others cap at) is waited in full, then succeeds."""
    clock = FakeClock()
    async with Simulator(SimulatorConfig(latency=0.0, jitter=0.0)) as sim:
        sim.script = ["429:90"]
        classifier = LLMClassifier(
            options=replace(
                llm_options(Settings.model_construct()), model="m", base_url=sim.base_url
            ),
            taxonomy=load_taxonomy(),
            governor=Governor(concurrency=4, clock=clock.time, sleep=clock.sleep),
            ledger=SpendLedger(),
        )
        policy = RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=30, sleep=clock.sleep)
        try:
            output, attempts = await policy.call(lambda: classifier.classify("hello", {}))
        finally:
            await classifier.aclose()
    assert attempts == 2 and output.classification.category in load_taxonomy().categories
    assert clock.slept[0] == pytest.approx(90.0)  # the policy's wait: the server's, not 30 s


async def test_overload_and_a_refused_key_are_told_apart() -> None:
    """503 is a retryable overload that narrows the window; 401 stops the run."""
    async with Simulator(SimulatorConfig(latency=0.0, jitter=0.0, api_key="right")) as sim:
        governor = Governor(concurrency=8)
        classifier = LLMClassifier(
            options=replace(
                llm_options(Settings.model_construct()),
                model="m",
                base_url=sim.base_url,
                api_key="right",
            ),
            taxonomy=load_taxonomy(),
            governor=governor,
            ledger=SpendLedger(),
        )
        sim.script = ["status:503"]
        with pytest.raises(TransientError) as overloaded:
            await classifier.classify("hello", {})
        assert not isinstance(overloaded.value, RateLimitError)
        assert governor.window == 4
        await classifier.aclose()
        wrong = LLMClassifier(
            options=replace(
                llm_options(Settings.model_construct()),
                model="m",
                base_url=sim.base_url,
                api_key="wrong",
            ),
            taxonomy=load_taxonomy(),
            governor=Governor(concurrency=8),
            ledger=SpendLedger(),
        )
        with pytest.raises(ConfigurationError, match="401"):
            await wrong.classify("hello", {})
        await wrong.aclose()


def test_a_text_too_long_is_cut_by_the_excess_not_by_the_prompt_ratio() -> None:
    """With a long prompt the excess tokens come off the text: the shortened request fits."""
    text = "My order is late. " * 400  # 7,200 characters, about 1,800 tokens
    instructions = 1_300  # tokens the prompt needs besides the text
    limit, used = 2_000, instructions + len(text) // 4
    kept = shorten(Conversation.of(text), limit, used).chars
    assert instructions + kept // 4 <= limit
    assert kept >= 1_000  # not cut to nothing either
    assert shorten(Conversation.of(text), None, None).chars == len(text) // 2
