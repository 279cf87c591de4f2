"""How well the classifiers label real messages: per-class precision, recall, F1, macro-F1.

    python -m bench.quality                       # the offline classifier, the VADER baseline
    python -m bench.quality --tweeteval DIR       # also TweetEval's sentiment val split
    python -m bench.quality --llm                 # also the LLM (BATCH_PROCESSOR_LLM_* settings)
    python -m bench.quality --simulated-llm 0.85  # also a simulated strong model, 85 % right
    python -m bench.quality --data mine.csv       # also your own labelled messages
    python -m bench.quality --patterns alone      # the messages alone, not in conversations

Each source is reported apart (a model tuned to one source would show it), with a confusion
matrix per classifier, the category report where the source has categories, the category
distribution, and the time per message. Each message is also placed in conversations with
agent turns (``bench/conversations.py``: a greeting first, a reply after, a thread with a
follow-up), read through the pipeline's own reader, and measured against the customer's own
label: one line per pattern, with its gap to the message alone. The sources and their
licences are in ``bench/data/DATA.md``; the evaluation sets the project is judged on are not
among them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch_processor.classifiers import Classifier, OfflineClassifier
from batch_processor.classifiers.signals import Signals
from batch_processor.conversation import Conversation
from batch_processor.errors import BatchProcessorError, ConfigurationError
from batch_processor.testing.simulator import Simulator, SimulatorConfig
from bench.conversations import PATTERNS, conversations
from bench.sentiment_data import DATA_DIR, Example, read_labelled, read_tsv, read_tweeteval

SENTIMENTS = ("negative", "neutral", "positive")
SHIPPED_SOURCES = ("goemotions_test.tsv", "support_dev.tsv", "support_holdout.tsv")


@dataclass
class Report:
    """Gold and predicted labels of one classifier on one source."""

    gold: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)

    def add(self, gold: str, predicted: str) -> None:
        """Record one message."""
        self.gold.append(gold)
        self.predicted.append(predicted)

    def per_class(self, labels: Sequence[str]) -> dict[str, tuple[float, float, float, int]]:
        """Label -> (precision, recall, F1, support)."""
        out = {}
        for label in labels:
            tp = sum(g == p == label for g, p in zip(self.gold, self.predicted, strict=True))
            predicted = self.predicted.count(label)
            support = self.gold.count(label)
            precision = tp / predicted if predicted else 0.0
            recall = tp / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
            out[label] = (precision, recall, f1, support)
        return out

    def macro_f1(self, labels: Sequence[str]) -> float:
        """Mean F1 over the labels that occur in the gold labels."""
        scores = [
            f1 for f1, support in ((v[2], v[3]) for v in self.per_class(labels).values()) if support
        ]
        return sum(scores) / len(scores) if scores else 0.0

    def confusion(self, labels: Sequence[str]) -> list[list[int]]:
        """Rows gold, columns predicted."""
        counts = Counter(zip(self.gold, self.predicted, strict=True))
        return [[counts[(g, p)] for p in labels] for g in labels]

    def text(self, labels: Sequence[str]) -> str:
        """The per-class table and the confusion matrix, as printed."""
        width = max(len(label) for label in labels) + 2
        lines = [f"{'':{width}}precision  recall     f1  support"]
        for label, (p, r, f1, n) in self.per_class(labels).items():
            lines.append(f"{label:{width}}{p:9.3f}{r:8.3f}{f1:7.3f}{n:9d}")
        lines.append(f"{'macro-F1':{width}}{self.macro_f1(labels):24.3f}{len(self.gold):9d}")
        lines.append("confusion (rows gold, columns predicted):")
        short = [label[:9] for label in labels]
        lines.append(f"{'':{width}}" + "".join(f"{s:>10}" for s in short))
        for label, row in zip(labels, self.confusion(labels), strict=True):
            lines.append(f"{label:{width}}" + "".join(f"{n:10d}" for n in row))
        return "\n".join(lines)


@dataclass
class Outcome:
    """What one classifier did on one source."""

    sentiment: Report = field(default_factory=Report)
    category: Report = field(default_factory=Report)
    categories: Counter[str] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)
    #: Messages the classifier gave no answer for (left out of the figures).
    failed: int = 0


def vader_baseline() -> Callable[[str], tuple[str, str | None]]:
    """The offline classifier before it had a model: VADER's compound at +-0.05."""
    from batch_processor.classifiers.cues import load_cues
    from batch_processor.classifiers.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    signals = Signals(load_cues(None, categories=taxonomy.categories, urgency=taxonomy.urgency))

    def label(text: str) -> tuple[str, str | None]:
        compound = signals.vader_scores(text)[0]
        if compound >= 0.05:
            return "positive", None
        return ("negative" if compound <= -0.05 else "neutral"), None

    return label


async def measure(
    classifier: Classifier | Callable[[str], tuple[str, str | None]],
    examples: Sequence[Example],
    concurrency: int = 1,
    pattern: str = "alone",
) -> Outcome:
    """Classify every example placed in ``pattern`` and compare with its labels.

    A plain function (the VADER baseline) reads the customer's words; a classifier gets the
    conversation as the pipeline reads it.
    """
    outcome = Outcome()
    semaphore = asyncio.Semaphore(concurrency)
    read = conversations([e.text for e in examples], pattern)

    async def one(
        example: Example, conversation: Conversation
    ) -> tuple[Example, tuple[str, str | None] | None, float]:
        async with semaphore:
            started = time.perf_counter()
            if isinstance(classifier, Classifier):
                labels: tuple[str, str | None] | None = await classify_patiently(
                    classifier, conversation
                )
            else:
                labels = classifier(conversation.customer_text)
            return example, labels, time.perf_counter() - started

    pairs = zip(examples, read, strict=True)
    for example, labels, seconds in await asyncio.gather(*(one(e, c) for e, c in pairs)):
        if labels is None:
            outcome.failed += 1
            continue
        sentiment, category = labels
        outcome.sentiment.add(example.sentiment, sentiment)
        outcome.seconds.append(seconds)
        if category is not None:
            outcome.categories[category] += 1
            if example.category:
                outcome.category.add(example.category, category)
    return outcome


def load_sources(
    tweeteval: Path | None,
    limit: int | None,
    data: Sequence[Path] = (),
    *,
    dev_set: bool = True,
) -> dict[str, list[Example]]:
    """The sources: the shipped files, TweetEval's val split if given, the user's ``data``."""
    sources: dict[str, list[Example]] = {}
    if dev_set:
        for name in SHIPPED_SOURCES:
            sources[name.removesuffix(".tsv")] = read_tsv(DATA_DIR / name)
    for path in data:
        sources[path.stem] = read_labelled(path)
    if tweeteval is not None:
        sources["tweeteval_val"] = read_tweeteval(tweeteval, "val", "tweeteval_val")
    return {name: spread(rows, limit) for name, rows in sources.items()}


def spread(rows: list[Example], limit: int | None) -> list[Example]:
    """At most ``limit`` rows taken evenly across the source (files are often sorted by label)."""
    if not limit or len(rows) <= limit:
        return rows
    step = len(rows) / limit
    return [rows[int(i * step)] for i in range(limit)]


def build_llm(base_url: str | None, model: str | None) -> Classifier:
    """The LLM classifier as the ``BATCH_PROCESSOR_LLM_*`` settings (and the flags) configure it."""
    from batch_processor.service.classifier_setup import build_classifier
    from batch_processor.settings import load_settings

    overrides = {"classifier": "llm", "llm_base_url": base_url, "llm_model": model}
    return build_classifier(load_settings(overrides))


async def classify_patiently(
    classifier: Classifier, text: Conversation | str
) -> tuple[str, str] | None:
    """The classifier's labels, retrying what the pipeline would retry; None if it fails.

    A configuration error ends the measurement: it is not about the message.
    """
    for attempt in range(6):
        try:
            result = (await classifier.classify(text, {})).classification
        except ConfigurationError:
            raise  # a wrong key, model or URL: every message would fail the same way
        except BatchProcessorError as exc:
            if not exc.retryable or attempt == 5:
                return None
            await asyncio.sleep(exc.retry_after or min(30.0, 0.5 * 2**attempt))
        else:
            return result.sentiment.label.value, result.category
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every classifier on every source, print the reports, return the figures."""
    sources = load_sources(args.tweeteval, args.limit, args.data, dev_set=not args.no_dev_set)
    if args.simulated_llm is None:
        return await _run(args, sources, args.llm_base_url, args.llm_model)
    async with strong_model(sources, args.simulated_llm) as simulator:
        return await _run(args, sources, simulator.base_url, "simulated-strong-model")


@contextlib.asynccontextmanager
async def strong_model(
    sources: dict[str, list[Example]], accuracy: float
) -> AsyncIterator[Simulator]:
    """The simulator answering every loaded message's own labels, right for ``accuracy``."""
    with tempfile.TemporaryDirectory(prefix="bp-quality-") as directory:
        answers = Path(directory) / "answers.jsonl"
        with answers.open("w", encoding="utf-8") as handle:
            for examples in sources.values():
                for example in examples:
                    row = {"text": example.text, "sentiment": example.sentiment}
                    handle.write(json.dumps(row | {"category": example.category}) + "\n")
        config = SimulatorConfig(
            latency=0.0, jitter=0.0, answers_file=str(answers), answers_accuracy=accuracy
        )
        async with Simulator(config) as simulator:
            yield simulator


async def _run(
    args: argparse.Namespace,
    sources: dict[str, list[Example]],
    base_url: str | None,
    model: str | None,
) -> dict[str, Any]:
    offline = OfflineClassifier()
    contenders: dict[str, Any] = {"offline": offline, "vader-baseline": vader_baseline()}
    if args.llm or args.simulated_llm is not None:
        contenders["llm"] = build_llm(base_url, model)
    figures: dict[str, Any] = {}
    try:
        for source, examples in sources.items():
            print(
                f"\n=== {source}: {len(examples)} messages "
                f"({dict(Counter(e.sentiment for e in examples))})"
            )
            for name, classifier in contenders.items():
                concurrency = args.llm_concurrency if name == "llm" else 1
                figures.setdefault(source, {})[name] = await report(
                    name, classifier, examples, concurrency, args.patterns
                )
    finally:
        for classifier in contenders.values():
            if hasattr(classifier, "aclose"):
                await classifier.aclose()
    return figures


async def report(
    name: str,
    classifier: Any,
    examples: Sequence[Example],
    concurrency: int,
    patterns: Sequence[str],
) -> dict[str, Any]:
    """Measure one classifier on one source (alone, then in each pattern); print the report."""
    outcome = await measure(classifier, examples, concurrency)
    summary = summarise(outcome)
    print(f"\n--- {name}: sentiment")
    print(outcome.sentiment.text(SENTIMENTS))
    if outcome.category.gold:
        labels = sorted(set(outcome.category.gold) | set(outcome.category.predicted))
        print(f"\n--- {name}: category")
        print(outcome.category.text(labels))
    if outcome.categories:
        total = sum(outcome.categories.values())
        shares = ", ".join(f"{c} {n / total:.0%}" for c, n in outcome.categories.most_common())
        print(f"categories: {shares}")
    if summary["ms_mean"] is not None:
        print(f"time per message: {summary['ms_mean']:.3f} ms mean, {summary['ms_p99']:.3f} ms p99")
    if outcome.failed:
        print(f"no answer for {outcome.failed} messages (left out above)")
    summary["patterns"] = {"alone": pattern_figures(outcome)}
    for pattern in patterns:
        if pattern != "alone":
            placed = await measure(classifier, examples, concurrency, pattern)
            summary["patterns"][pattern] = pattern_figures(placed)
    print(pattern_table(summary["patterns"]))
    if isinstance(classifier, OfflineClassifier):
        summary["calibration_error"] = print_reliability(classifier, examples)
    return summary


def print_reliability(offline: OfflineClassifier, examples: Sequence[Example]) -> float:
    """The calibrated offline confidence against accuracy on these messages; the ECE."""
    from batch_processor.cascade.calibration import Calibration, reliability, reliability_text
    from bench.calibrate import sureness

    calibration = Calibration.shipped()
    raw, labels, right = sureness(offline, examples)
    calibrated = [calibration(r, label) for r, label in zip(raw, labels, strict=True)]
    table, error = reliability(calibrated, right)
    print("\n--- offline: calibrated sentiment confidence (the cascade's), alone and in threads")
    print(reliability_text(table, error))
    return error


def summarise(outcome: Outcome) -> dict[str, Any]:
    """The figures of one outcome, for ``--json``."""
    seconds = sorted(outcome.seconds)
    return {
        "sentiment_macro_f1": round(outcome.sentiment.macro_f1(SENTIMENTS), 4),
        "sentiment_f1": {
            label: round(values[2], 4)
            for label, values in outcome.sentiment.per_class(SENTIMENTS).items()
        },
        "category_macro_f1": (
            round(outcome.category.macro_f1(sorted(set(outcome.category.gold))), 4)
            if outcome.category.gold
            else None
        ),
        "category_shares": {
            c: round(n / sum(outcome.categories.values()), 4)
            for c, n in outcome.categories.most_common()
        },
        "failed": outcome.failed,
        # None when the classifier answered no message (all failed, or an empty source).
        "ms_mean": round(1000 * sum(seconds) / len(seconds), 4) if seconds else None,
        "ms_p99": round(1000 * seconds[int(0.99 * (len(seconds) - 1))], 4) if seconds else None,
    }


def pattern_figures(outcome: Outcome) -> dict[str, Any]:
    """Sentiment and category figures of one conversation pattern."""
    shares = outcome.categories.most_common(1)
    total = sum(outcome.categories.values())
    return {
        "sentiment_macro_f1": round(outcome.sentiment.macro_f1(SENTIMENTS), 4),
        "category_macro_f1": (
            round(outcome.category.macro_f1(sorted(set(outcome.category.gold))), 4)
            if outcome.category.gold
            else None
        ),
        "largest_category": (
            {"label": shares[0][0], "share": round(shares[0][1] / total, 4)} if shares else None
        ),
    }


def pattern_table(patterns: dict[str, dict[str, Any]]) -> str:
    """One line per conversation pattern: sentiment macro-F1, its gap to alone, categories."""
    alone = patterns["alone"]["sentiment_macro_f1"]
    lines = ["pattern     sentiment  vs alone  category  largest category"]
    for pattern, figures in patterns.items():
        f1 = figures["sentiment_macro_f1"]
        category = figures["category_macro_f1"]
        largest = figures["largest_category"]
        lines.append(
            f"{pattern:<10}{f1:>10.3f}{f1 - alone:>+10.3f}"
            f"{'' if category is None else f'{category:.3f}':>10}  "
            + ("" if largest is None else f"{largest['label']} {largest['share']:.0%}")
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and print the quality report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tweeteval", type=Path, help="TweetEval's datasets/sentiment directory")
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        default=[],
        help="a labelled CSV/TSV of your own (text, sentiment[, category]); repeatable",
    )
    parser.add_argument("--no-dev-set", action="store_true", help="only the --data files")
    parser.add_argument("--llm", action="store_true", help="also measure the LLM classifier")
    parser.add_argument("--llm-base-url", help="default: the llm_base_url setting")
    parser.add_argument("--llm-model", help="default: the llm_model setting")
    parser.add_argument("--llm-concurrency", type=int, default=8)
    parser.add_argument(
        "--simulated-llm",
        type=float,
        metavar="ACCURACY",
        help="measure the LLM classifier against the simulator answering each message's own "
        "labels, right for this share of them (a stand-in for a strong model; no key, no cost)",
    )
    parser.add_argument(
        "--limit", type=int, help="at most this many messages per source, taken evenly"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--patterns",
        type=lambda value: [p.strip() for p in value.split(",") if p.strip()],
        default=list(PATTERNS),
        help=f"conversation patterns to measure, comma-separated (default: {','.join(PATTERNS)})",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.patterns) - set(PATTERNS))
    if unknown:
        parser.error(f"unknown pattern(s) {', '.join(unknown)}; known: {', '.join(PATTERNS)}")
    try:
        figures = asyncio.run(run(args))
    except (OSError, ValueError, UnicodeDecodeError, ConfigurationError) as exc:
        print(f"bench.quality: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
