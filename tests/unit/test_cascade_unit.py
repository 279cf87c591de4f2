"""The confidence cascade's parts: escalation, calibration, learning, the classifier, the keeper."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from batch_processor.cascade.calibration import Calibration, fit, reliability
from batch_processor.cascade.classifier import CascadeClassifier
from batch_processor.cascade.escalation import Escalation, audited
from batch_processor.cascade.learning import Labelled, Outcome, held_back, learn
from batch_processor.cascade.versions import learn_version
from batch_processor.classifiers import OfflineClassifier
from batch_processor.classifiers.base import Classifier
from batch_processor.classifiers.sentiment_model import SentimentModel
from batch_processor.conversation import Conversation
from batch_processor.models import (
    Classification,
    ClassifierOutput,
    Sentiment,
    SentimentLabel,
    SourceDocument,
    TokenUsage,
)
from batch_processor.service.jobs import job_outcomes, pipeline_options
from batch_processor.service.model_keeper import ModelKeeper
from batch_processor.settings import Settings

#: Customers' own words the shipped model has never seen.
NEGATIVE, POSITIVE = ("blorky", "skrumbled", "grimbly"), ("zindy", "plooshy", "snorfy")


def jargon(count: int) -> list[tuple[str, str]]:
    """(text, sentiment) in words of the customers' own."""
    rows = []
    for i in range(count):
        label = ("negative", "positive", "neutral")[i % 3]
        words = {"negative": NEGATIVE, "positive": POSITIVE}.get(label)
        text = f"the parcel is {words[i % 3]} again, ticket {i}" if words else f"where is box {i}"
        rows.append((text, label))
    return rows


class FakeLLM(Classifier):
    """An LLM tier: answers ``label`` at a cost, with a repair when told."""

    name = "llm"
    version = "9"

    def __init__(self, label: str = "negative", repairs: tuple[str, ...] = ()) -> None:
        self.label = label
        self.repairs = repairs
        self.calls = 0

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """The scripted answer, costing 0.001 USD."""
        self.calls += 1
        classification = Classification(
            sentiment=Sentiment(label=SentimentLabel(self.label), score=0.0),
            category="billing",
            urgency="low",
            language="en",
            confidence=0.5,
        )
        usage = TokenUsage(input_tokens=100, output_tokens=20)
        return ClassifierOutput(
            classification=classification,
            usage=usage,
            cost_usd=0.001,
            model=f"fake-{self.version}",
            repairs=self.repairs,
        )

    def summary(self) -> dict[str, Any]:
        """The calls made."""
        return {"llm_calls": self.calls}

    async def aclose(self) -> None:
        """Nothing to release."""


def escalation(share: float, audit: float = 0.0, **extra: Any) -> Escalation:
    """An escalation on the shipped calibration."""
    return Escalation(share=share, audit_share=audit, calibration=Calibration.shipped(), **extra)


def test_the_llm_share_meets_its_target_on_a_steady_stream() -> None:
    """Over 5,000 documents the LLM sees the target share (the audit included), give or take 2 %."""
    chooser = escalation(0.35, audit=0.02)
    rng = random.Random(3)
    for i in range(5000):
        chooser.decide(rng.uniform(0.34, 1.0), rng.choice(["negative", "positive"]), f"t{i}")
    asked = chooser.routes["llm"] + chooser.routes["audit"]
    assert 0.33 * 5000 <= asked <= 0.37 * 5000, chooser.routes
    assert chooser.routes["audit"] > 0


def test_a_share_of_zero_asks_nothing_and_a_share_of_one_asks_everything() -> None:
    """Zero: no LLM call, not even the audit; one: every document goes."""
    none, every = escalation(0.0, audit=0.05), escalation(1.0)
    for i in range(300):
        none.decide(0.4, "negative", f"t{i}")
        every.decide(0.99, "positive", f"t{i}")
    assert none.routes == {"offline": 300, "llm": 0, "audit": 0}
    assert every.routes["llm"] == 300


def test_the_audit_picks_the_same_texts_in_every_run() -> None:
    """The audit sample is fixed by the text: a repeat is sampled alike, about its share."""
    picked = [audited(f"message {i}", 0.1) for i in range(4000)]
    assert picked == [audited(f"message {i}", 0.1) for i in range(4000)]
    assert 0.08 * 4000 <= sum(picked) <= 0.12 * 4000


def test_a_fixed_confidence_sends_exactly_the_less_sure_documents() -> None:
    """``cascade_confidence`` replaces the share: below it, to the LLM."""
    chooser = escalation(0.35, confidence=0.7)
    calibration = chooser.calibration
    for raw in (0.4, 0.6, 0.8, 0.95, 0.99):
        decision = chooser.decide(raw, "positive", f"t{raw}")
        assert (decision.route == "llm") == (calibration(raw, "positive") < 0.7)
        assert decision.threshold == 0.7


def test_the_isotonic_fit_is_monotone_calibrated_and_stored_whole() -> None:
    """Fitted confidence never falls as sureness rises, matches accuracy, and round-trips."""
    rng = random.Random(5)
    sureness = [rng.uniform(0.34, 1.0) for _ in range(4000)]
    labels = [rng.choice(["negative", "positive"]) for _ in sureness]
    # Right with chance sureness squared: the raw sureness is over-confident.
    right = [rng.random() < s * s for s in sureness]
    calibration = fit(sureness, labels, right, source="test")
    grid = [0.3 + i / 100 for i in range(71)]
    for label in ("negative", "positive", "*"):
        values = [calibration(x, label) for x in grid]
        assert values == sorted(values)
    _, raw_error = reliability(sureness, right)
    calibrated = [calibration(s, label) for s, label in zip(sureness, labels, strict=True)]
    _, error = reliability(calibrated, right)
    assert error < 0.03 < raw_error
    assert Calibration.of(calibration.as_dict()) == calibration


def test_learning_is_reproducible_and_never_trains_on_its_held_back_slice() -> None:
    """The same labels give the same bytes; a fixed fifth by id is held back and judged."""
    offline = OfflineClassifier()
    shipped = SentimentModel.load()
    rows = [Labelled(f"d{i:04d}", (text,), label) for i, (text, label) in enumerate(jargon(300))]
    first = learn(shipped, shipped, offline.signals, rows)
    second = learn(shipped, shipped, offline.signals, list(reversed(rows)))
    assert first.change.to_bytes() == second.change.to_bytes()
    held = [row for row in rows if held_back(row.doc_id)]
    assert first.held_back == len(held) and first.trained_on == 300 - len(held)
    assert 0.1 * 300 <= len(held) <= 0.3 * 300
    # The customers' words are learnt: the candidate agrees with the LLM far more often.
    assert first.better and first.agreement > first.current_agreement + 0.2


def test_a_gain_that_could_be_chance_is_not_promoted() -> None:
    """Equal wins and losses on the held-back slice, or too few judged, promote nothing."""
    change = learn(
        SentimentModel.load(), SentimentModel.load(), OfflineClassifier().signals, []
    ).change
    base: dict[str, Any] = {"change": change, "calibration": Calibration.shipped()}
    base["trained_on"] = 900
    even = Outcome(**base, held_back=200, agreement=0.71, current_agreement=0.70, wins=6, losses=5)
    clear = Outcome(**base, held_back=200, agreement=0.8, current_agreement=0.7, wins=30, losses=8)
    few = Outcome(**base, held_back=20, agreement=0.9, current_agreement=0.5, wins=10, losses=0)
    assert (even.better, clear.better, few.better) == (False, True, False)
    assert clear.p_value < 0.001 < even.p_value


async def test_an_escalated_document_takes_the_llm_answer_and_records_both() -> None:
    """Route llm: the LLM's labels, both answers and the threshold recorded, the cost counted."""
    cascade = CascadeClassifier(offline=OfflineClassifier(), llm=FakeLLM("negative"),
                                escalation=escalation(1.0))  # fmt: skip
    output = await cascade.classify("thank you so much, all sorted!", {})
    record = output.cascade
    assert record is not None and record.route == "llm" and record.model == "shipped"
    assert record.offline.sentiment == "positive" and record.llm is not None
    assert output.classification.sentiment.label == "negative" and output.cost_usd == 0.001
    assert cascade.state.llm_labels == 1


async def test_an_audited_document_keeps_the_offline_answer_but_pays_for_the_llm() -> None:
    """Route audit: the offline labels stand; the LLM's answer and its cost are kept."""
    llm = FakeLLM("negative")
    cascade = CascadeClassifier(offline=OfflineClassifier(), llm=llm,
                                escalation=escalation(0.5, audit=0.5))  # fmt: skip
    routes = set()
    for i in range(200):
        output = await cascade.classify(f"thank you so much, all sorted! #{i}", {})
        assert output.cascade is not None
        routes.add(output.cascade.route)
        if output.cascade.route == "audit":
            assert output.classification.sentiment.label == "positive"
            assert output.cascade.llm is not None and output.cost_usd == 0.001
            assert output.usage is not None and output.usage.input_tokens == 100
    assert routes == {"offline", "audit"}  # the whole share is audit: none escalated


async def test_the_second_tier_is_asked_when_the_first_needed_a_repair() -> None:
    """``llm_escalation_model``: a repaired (or unsure) first answer goes to the larger model."""
    first, larger = FakeLLM("neutral", repairs=("themes",)), FakeLLM("negative")
    larger.version = "large"
    cascade = CascadeClassifier(offline=OfflineClassifier(), llm=first,
                                escalation=escalation(1.0), second=larger)  # fmt: skip
    output = await cascade.classify("where is my parcel", {})
    assert output.cascade is not None and output.cascade.second is not None
    assert output.classification.sentiment.label == "negative"
    assert output.cost_usd == pytest.approx(0.002) and larger.calls == 1


class MemoryVersions:
    """The version store in memory (the MongoDB one in production)."""

    def __init__(self, rows: Sequence[tuple[str, str]]) -> None:
        self.docs = [SourceDocument(id=f"d{i:04d}", fields={"messages": text})
                     for i, (text, _) in enumerate(rows)]  # fmt: skip
        self.stored_labels = [
            (doc.id, label, "llm") for doc, (_, label) in zip(self.docs, rows, strict=True)
        ]
        self.versions: dict[str, dict[str, Any]] = {}
        self.active_name = "shipped"
        self.new = 0
        self.holder: str | None = None
        self.claims = 0

    async def active(self) -> str:
        """The active version."""
        return self.active_name

    async def version(self, name: str) -> dict[str, Any] | None:
        """A stored version."""
        return self.versions.get(name)

    async def add(self, document: dict[str, Any]) -> str:
        """Store a version."""
        name = f"v{len(self.versions) + 1}"
        self.versions[name] = document
        return name

    async def promote(self, name: str, replacing: str) -> bool:
        """Compare-and-set the active version."""
        if self.active_name != replacing:
            return False
        self.active_name = name
        return True

    async def add_labels(self, count: int) -> int:
        """Count new labels."""
        self.new += count
        return self.new

    async def claim_learning(self, holder: str, lease: timedelta, at_least: int) -> int | None:
        """Take the lease when free and enough labels wait."""
        if self.holder is not None or self.new < at_least:
            return None
        self.holder, self.claims = holder, self.claims + 1
        return self.new

    async def end_learning(self, holder: str, counted: int) -> None:
        """Release the lease."""
        self.holder, self.new = None, self.new - counted

    async def labels(self, taxonomy_version: str | None) -> list[tuple[str, str, str]]:
        """The stored LLM labels."""
        return self.stored_labels

    async def sources(self, doc_ids: Sequence[str], text_field: str) -> list[SourceDocument]:
        """The labelled documents."""
        return [doc for doc in self.docs if doc.id in set(doc_ids)]


async def test_the_keeper_learns_after_enough_labels_and_every_cascade_follows() -> None:
    """After ``learn_every`` labels one version is trained, promoted, and used from then on."""
    store = MemoryVersions(jargon(300))
    cascade = CascadeClassifier(offline=OfflineClassifier(), llm=FakeLLM(),
                                escalation=escalation(1.0))  # fmt: skip
    keeper = keeper_for(cascade, store, learn_every=250)
    for i in range(200):
        await cascade.classify(f"where is box {i}", {})
    await keeper.check()
    assert store.claims == 0 and store.new == 200  # not enough yet
    for i in range(100):
        await cascade.classify(f"where is crate {i}", {})
    await keeper.check()
    assert store.claims == 1 and store.active_name == "v1"
    assert cascade.model_version == "v1" and store.new == 0
    output = await cascade.classify("the parcel is blorky again", {})
    assert output.cascade is not None and output.cascade.model == "v1"

    other = CascadeClassifier(offline=OfflineClassifier(), llm=FakeLLM(),
                              escalation=escalation(0.0))  # fmt: skip
    follower = keeper_for(other, store, learn_every=250)
    await follower.check()
    assert other.model_version == "v1"  # another worker uses the promoted version
    output = await other.classify("the parcel is blorky again", {})
    assert output.classification.sentiment.label == "negative"


async def test_learn_version_with_no_labels_stores_nothing() -> None:
    """A learn before any LLM label: no version, the active one unchanged."""
    store = MemoryVersions([])
    learnt = await learn_version(
        store, signals=OfflineClassifier().signals, customer_turns=lambda _: (),
        text_field="messages", taxonomy_version=None, audit_share=0.02,
    )  # fmt: skip
    assert learnt.name is None and store.versions == {} and store.active_name == "shipped"


def keeper_for(cascade: CascadeClassifier, store: MemoryVersions, learn_every: int) -> ModelKeeper:
    """A model keeper of ``cascade`` on ``store`` with the default settings' text reader."""
    outcomes = job_outcomes(pipeline_options(Settings()), "test", cascade)
    return ModelKeeper(
        cascade, store, outcomes=outcomes, learn_every=learn_every, audit_share=0.02,
        sleep=_no_sleep,
    )  # fmt: skip


async def _no_sleep(_: float) -> None:
    """The keeper's sleep, never called here."""


def test_metrics_count_the_cascade_routes_and_show_the_threshold() -> None:
    """``/metrics`` has the cascade's documents by route and its threshold."""
    from prometheus_client import generate_latest

    from batch_processor.pipeline.stats import RunStats
    from batch_processor.runtime.metrics import registry_for
    from batch_processor.runtime.telemetry import Telemetry

    telemetry = Telemetry()
    summary = {"cascade_routes": {"offline": 7, "llm": 3, "audit": 1}, "cascade_threshold": 0.62}
    sizes = {"classify": 0, "store": 0, "dead": 0}
    telemetry.job_started(RunStats(), classifier_summary=lambda: summary, queue_sizes=lambda: sizes)
    text = generate_latest(registry_for(telemetry)).decode()
    assert 'batch_processor_cascade_documents_total{route="llm"} 3.0' in text
    assert "batch_processor_cascade_threshold 0.62" in text


async def test_a_damaged_version_is_not_used_and_does_not_stop_the_worker() -> None:
    """An active version whose weights cannot be read: a warning, the model in use stays."""
    store = MemoryVersions([])
    store.versions["v9"] = {"change": b"not an npz", "calibration": {}}
    store.active_name = "v9"
    cascade = CascadeClassifier(offline=OfflineClassifier(), llm=FakeLLM(),
                                escalation=escalation(0.0))  # fmt: skip
    keeper = keeper_for(cascade, store, learn_every=0)
    await keeper.check()
    assert cascade.model_version == "shipped"
    output = await cascade.classify("thank you, all sorted!", {})
    assert output.cascade is not None and output.cascade.model == "shipped"
