"""The simulator as a strong model: a labelled set's labels, right at the configured accuracy."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from batch_processor.classifiers.taxonomy import load_taxonomy
from batch_processor.conversation import Conversation, Speaker, Turn
from batch_processor.llm.client import LLMClassifier
from batch_processor.llm.cost import SpendLedger
from batch_processor.llm.governor import Governor
from batch_processor.service.classifier_setup import llm_options
from batch_processor.settings import Settings
from batch_processor.testing.simulator import Simulator, SimulatorConfig
from batch_processor.testing.simulator.answers import SENTIMENTS, KnownAnswers

CATEGORIES = ("billing", "shipping_delivery", "complaint")


def labelled(count: int) -> dict[str, tuple[str, str | None]]:
    """``count`` distinct texts with labels spread over every class."""
    return {
        f"message number {i} about my order": (SENTIMENTS[i % 3], CATEGORIES[i % 3])
        for i in range(count)
    }


def test_answers_are_right_at_the_configured_accuracy_and_repeat() -> None:
    """85 % right over 3,000 texts, each wrong one a different label; a repeat answers alike."""
    truth = labelled(3000)
    known = KnownAnswers(truth, accuracy=0.85, seed=7)
    answers = {text: known.answer([text], CATEGORIES) for text in truth}
    right = Counter(a is not None and a.sentiment == truth[t][0] for t, a in answers.items())
    assert 0.83 <= right[True] / 3000 <= 0.87
    for text, answer in answers.items():
        assert answer is not None
        assert answer.right == (answer.sentiment == truth[text][0])
        assert answer.right == (answer.category == truth[text][1])
        assert known.answer([f"  {text.upper()} "], CATEGORIES) == answer  # same text, same answer
    other_seed = KnownAnswers(truth, accuracy=0.85, seed=8)
    assert any(other_seed.answer([t], CATEGORIES) != a for t, a in answers.items())


def test_a_known_message_inside_a_conversation_is_found_and_unknown_texts_are_not() -> None:
    """Looked up by the customer's turns joined, then turn by turn; unknown gives None."""
    known = KnownAnswers({"my parcel never came": ("negative", "shipping_delivery")}, accuracy=1)
    assert known.answer(["My parcel  never came"], CATEGORIES) is not None
    found = known.answer(["my parcel never came", "any news?"], CATEGORIES)
    assert found is not None and found.sentiment == "negative"
    assert known.answer(["something else"], CATEGORIES) is None
    outside = known.answer(["my parcel never came"], ("billing",))  # not a label of the request
    assert outside is not None and outside.category is None


def test_a_labelled_file_is_read_as_tsv_or_json_lines_and_a_bad_row_is_named(
    tmp_path: Path,
) -> None:
    """The project's TSV format and JSON Lines load; a row without a sentiment is refused."""
    tsv = tmp_path / "set.tsv"
    tsv.write_text("text\tsentiment\tcategory\nrefund me now\tnegative\tbilling\n")
    lines = tmp_path / "set.jsonl"
    lines.write_text('{"text": "thanks a lot", "sentiment": "positive"}\n')
    assert len(KnownAnswers.load(tsv, accuracy=1)) == 1
    assert len(KnownAnswers.load(lines, accuracy=1)) == 1
    lines.write_text('{"text": "thanks a lot", "sentiment": "great"}\n')
    with pytest.raises(ValueError, match="entry 1"):
        KnownAnswers.load(lines, accuracy=1)


async def test_the_llm_classifier_gets_the_known_labels_through_the_simulator(
    tmp_path: Path,
) -> None:
    """Through the real SDK: the labels of the file, the agent's turns ignored for the lookup."""
    answers = tmp_path / "set.tsv"
    answers.write_text(
        "text\tsentiment\tcategory\n"
        "thanks, the new card works perfectly\tnegative\tbilling\n"  # a label the words contradict
        "where is my refund\tpositive\tcomplaint\n"
    )
    config = SimulatorConfig(latency=0.0, jitter=0.0, answers_file=str(answers))
    async with Simulator(config) as sim:
        classifier = LLMClassifier(
            options=replace(
                llm_options(Settings.model_construct()), model="m", base_url=sim.base_url
            ),
            taxonomy=load_taxonomy(),
            governor=Governor(concurrency=2),
            ledger=SpendLedger(),
        )
        try:
            first = await classifier.classify("thanks, the new card works perfectly", {})
            chat = Conversation(
                (
                    Turn(Speaker.AGENT, "Hello, how can I help?"),
                    Turn(Speaker.CUSTOMER, "where is my refund"),
                )
            )
            second = await classifier.classify(chat, {})
        finally:
            await classifier.aclose()
    assert first.classification.sentiment.label == "negative"
    assert first.classification.category == "billing"
    assert second.classification.sentiment.label == "positive"
    assert sim.stats["known_answered"] == 2 and sim.stats["known_wrong"] == 0
