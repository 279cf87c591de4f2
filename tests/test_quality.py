"""The offline classifier's quality on labelled messages, and the command that reports it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batch_processor.classifiers import OfflineClassifier
from batch_processor.testing.simulator import Simulator, SimulatorConfig
from bench.quality import SENTIMENTS, measure, vader_baseline
from bench.sentiment_data import DATA_DIR, read_tsv

ROOT = Path(__file__).parents[1]
SAMPLE = Path(__file__).parent / "data" / "goemotions_sample.tsv"


async def test_the_model_beats_vader_on_human_labelled_comments() -> None:
    """On 298 rater-labelled comments the model's macro-F1 is well above plain VADER's."""
    examples = read_tsv(SAMPLE)
    classifier = OfflineClassifier()
    try:
        model = await measure(classifier, examples)
    finally:
        await classifier.aclose()
    baseline = await measure(vader_baseline(), examples)
    assert model.sentiment.macro_f1(SENTIMENTS) >= 0.65
    assert model.sentiment.macro_f1(SENTIMENTS) >= baseline.sentiment.macro_f1(SENTIMENTS) + 0.03


async def test_support_messages_get_their_sentiment_and_category() -> None:
    """On the support hold-out set (not tuned on) sentiment and category are mostly right."""
    examples = read_tsv(DATA_DIR / "support_holdout.tsv")
    classifier = OfflineClassifier()
    try:
        outcome = await measure(classifier, examples)
    finally:
        await classifier.aclose()
    assert outcome.sentiment.macro_f1(SENTIMENTS) >= 0.65
    assert outcome.category.macro_f1(sorted(set(outcome.category.gold))) >= 0.65
    assert max(outcome.categories.values()) <= 0.4 * len(examples)


def test_the_quality_command_prints_the_reports() -> None:
    """bench.quality prints per-class figures, macro-F1 and a confusion matrix per source."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.quality", "--limit", "40"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for source in ("goemotions_test", "support_dev", "support_holdout"):
        assert f"{source}: 40 messages" in done.stdout
    # 2 classifiers x 3 sources, and the category report of the two support sources
    assert done.stdout.count("macro-F1") == 8
    assert done.stdout.count("confusion (rows gold, columns predicted):") == 8
    assert "--- vader-baseline: sentiment" in done.stdout


async def test_the_quality_command_measures_the_llm_beside(tmp_path: Path) -> None:
    """With --llm the same sets go through the LLM classifier too (here the simulator)."""
    config = SimulatorConfig(latency=0.005, jitter=0.0, api_key="sk-test-quality-key-000111")
    async with Simulator(config) as simulator:
        env: dict[str, Any] = {
            "BATCH_PROCESSOR_LLM_API_KEY": "sk-test-quality-key-000111",
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
        }
        process = await asyncio_subprocess(
            sys.executable,
            "-m",
            "bench.quality",
            "--limit",
            "20",
            "--llm",
            "--llm-base-url",
            simulator.base_url,
            "--llm-model",
            "gpt-4o-mini",
            "--json",
            str(tmp_path / "q.json"),
            env=env,
        )
    assert process[0] == 0, process[2]
    assert process[1].count("--- llm: sentiment") == 3
    assert (tmp_path / "q.json").exists()


@pytest.mark.parametrize(("accuracy", "low", "high"), [("1", 1.0, 1.0), ("0.8", 0.6, 0.9)])
async def test_a_simulated_strong_model_is_measured_at_its_accuracy(
    tmp_path: Path, accuracy: str, low: float, high: float
) -> None:
    """--simulated-llm: the LLM path against the messages' own labels, right as often as told."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code, out, err = await asyncio_subprocess(
        sys.executable, "-m", "bench.quality", "--limit", "60", "--patterns", "alone",
        "--simulated-llm", accuracy, "--json", str(tmp_path / "q.json"), env=env,
    )  # fmt: skip
    assert code == 0, err
    assert out.count("--- llm: sentiment") == 3
    figures = json.loads((tmp_path / "q.json").read_text())
    for source in figures.values():
        assert low <= source["llm"]["sentiment_macro_f1"] <= high, source["llm"]


async def asyncio_subprocess(*command: str, env: dict[str, Any]) -> tuple[int, str, str]:
    """Run a command without blocking the loop (the simulator serves from this loop)."""
    import asyncio

    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=100)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("text", "sentiment", "category"),
    [
        ("flight delayed 3 hours and no one at the gate", "negative", "complaint"),
        ("been on hold 45 minutes", "negative", "complaint"),
        ("still waiting for my refund", "negative", "refund_return"),
        ("@AirCo where is my bag?? 2 days now", "negative", "shipping_delivery"),
        ("Great, another delay. Love it.", "negative", "complaint"),
        ("not happy with the food on board", "negative", "complaint"),
        ("My flight was Cancelled, now what", "negative", "cancellation"),
        ("Can I change my seat on tomorrow's flight?", "neutral", "product_inquiry"),
        ("Is the return flight to Oslo on time?", "neutral", "general_inquiry"),
        ("thanks for the quick help, all sorted 👍", "positive", "general_inquiry"),
    ],
)
async def test_support_text_without_sentiment_words(
    text: str, sentiment: str, category: str
) -> None:
    """Complaints without sentiment words, sarcasm, negated praise and polite questions."""
    classifier = OfflineClassifier()
    try:
        result = (await classifier.classify(text, {})).classification
    finally:
        await classifier.aclose()
    assert (result.sentiment.label.value, result.category) == (sentiment, category)


def test_the_quality_command_reads_your_own_labelled_file(tmp_path: Path) -> None:
    """--data measures a user's CSV; a label it cannot read is named with its line, exit 2."""
    mine = tmp_path / "mine.csv"
    mine.write_text(
        'text,label,category\n"the app keeps crashing, fix it",neg,technical_issue\n'
        "what time do you open?,Neutral,general_inquiry\n"
    )
    command = [sys.executable, "-m", "bench.quality", "--no-dev-set", "--data", str(mine)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    assert "=== mine: 2 messages" in done.stdout and "--- offline: category" in done.stdout
    mine.write_text("text,label\nhello,great\n")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 2
    assert "mine.csv:2: sentiment 'great' is not negative/neutral/positive" in done.stderr


async def test_the_quality_command_names_a_wrong_llm_key_and_exits_2(tmp_path: Path) -> None:
    """A key the endpoint refuses ends the run with exit 2 naming the setting, no traceback."""
    config = SimulatorConfig(latency=0.0, jitter=0.0, api_key="sk-test-the-right-key-000111")
    async with Simulator(config) as simulator:
        env: dict[str, Any] = {
            "BATCH_PROCESSOR_LLM_API_KEY": "sk-test-a-wrong-key-999999",
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
        }
        code, out, err = await asyncio_subprocess(
            sys.executable, "-m", "bench.quality", "--limit", "5", "--llm",
            "--llm-base-url", simulator.base_url, "--llm-model", "gpt-4o-mini", env=env,
        )  # fmt: skip
    assert code == 2, (out, err)
    assert "llm_api_key" in err and "Traceback" not in err
