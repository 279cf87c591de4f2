"""The confidence cascade measured: quality, LLM share and cost, before and after learning.

    python -m bench.cascade [--accuracy 0.85] [--share 0.35] [--jargon] [--limit N] [--json PATH]

Against the simulator answering each message's own label, right for ``--accuracy`` of them
(a stand-in for a strong model), with the ``gpt-4o-mini`` price list, in one process:

* all-offline, all-LLM and the cascade (defaults) on the measuring set: GoEmotions' test split
  (odd rows) and ``support_holdout.tsv``, each message alone and in a thread with agent turns;
* then the cascade classifies a stream it learns from (GoEmotions' even rows, ``support_dev``
  and ``support_train``), a version is trained on the LLM labels it gathered, judged on its
  held-back slice, and, if promoted, the measuring set is classified again.

It prints one table (sentiment macro-F1, LLM requests per document, cost per 1,000) and the
calibrated offline confidence's reliability table on the measuring set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from batch_processor.cascade.calibration import reliability, reliability_text
from batch_processor.cascade.classifier import CascadeClassifier
from batch_processor.cascade.learning import Labelled, learn
from batch_processor.classifiers import Classifier, OfflineClassifier
from batch_processor.classifiers.sentiment_model import SentimentModel
from batch_processor.conversation import Conversation
from batch_processor.service.classifier_setup import build_classifier
from batch_processor.settings import load_settings
from bench.conversations import conversations
from bench.quality import SENTIMENTS, Report, strong_model
from bench.sentiment_data import DATA_DIR, Example, read_tsv

SHAPES = ("alone", "thread")
MODEL = "gpt-4o-mini"
#: ``--jargon``: users who say their feelings in words no training text has (a stand-in for a
#: domain's own vocabulary): each of these words becomes a made-up one, in every set alike.
JARGON = {
    "love": "flurb", "thanks": "zindo", "thank": "zind", "great": "plonky", "good": "vesk",
    "best": "vesker", "amazing": "glorpy", "nice": "tibble", "awesome": "snorfy",
    "beautiful": "quimsy", "happy": "brisp", "glad": "brispy", "cool": "frell",
    "funny": "wubsy", "excited": "zazzed", "proud": "hoopy", "hope": "yarn",
    "sad": "droob", "sorry": "mloo", "hate": "grask", "bad": "blick", "worst": "blickest",
    "terrible": "skronky", "stupid": "dorf", "awful": "grimble", "annoying": "nagly",
    "disgusting": "yucksome", "horrible": "skronk", "pathetic": "feeb", "disappointed": "sagged",
    "angry": "fumey", "ugly": "gronk", "wrong": "skew", "idiot": "dorfus", "dumb": "dorfy",
    "lol": "hehk", "wow": "whee", "damn": "drat", "shit": "blarg", "fuck": "frak",
}  # fmt: skip
_WORD = re.compile(r"[A-Za-z]+")


def jargon(examples: list[Example]) -> list[Example]:
    """``examples`` in the ``--jargon`` words (see :data:`JARGON`)."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        return JARGON.get(word.lower(), word)

    return [replace(e, text=_WORD.sub(swap, e.text)) for e in examples]


def measuring_set(limit: int | None) -> list[Example]:
    """Messages never fitted, trained or calibrated on."""
    rows = read_tsv(DATA_DIR / "goemotions_test.tsv")[1::2]
    rows = rows[:: max(1, len(rows) // limit)][:limit] if limit else rows
    return rows + read_tsv(DATA_DIR / "support_holdout.tsv")


def stream_set(limit: int | None) -> list[Example]:
    """The messages the cascade learns from (their LLM answers, never their labels)."""
    rows = read_tsv(DATA_DIR / "goemotions_test.tsv")[::2]
    rows = rows[:: max(1, len(rows) // limit)][:limit] if limit else rows
    return rows + read_tsv(DATA_DIR / "support_dev.tsv") + read_tsv(DATA_DIR / "support_train.tsv")


def placed(examples: Sequence[Example]) -> list[tuple[Example, Conversation]]:
    """Each message in every shape, as the daemon reads it."""
    texts = [e.text for e in examples]
    return [
        pair for shape in SHAPES for pair in zip(examples, conversations(texts, shape), strict=True)
    ]


async def run_over(
    classifier: Classifier, pairs: Sequence[tuple[Example, Conversation]], concurrency: int = 16
) -> tuple[Report, list[Any]]:
    """Classify every conversation; the sentiment report and the cascade records.

    The report's ``predicted`` and the records are in the order of ``pairs``.
    """
    report = Report()
    records: list[Any] = [None] * len(pairs)
    labels: list[str] = [""] * len(pairs)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int, conversation: Conversation) -> None:
        async with semaphore:
            output = await classifier.classify(conversation, {})
            records[index] = output.cascade
            labels[index] = output.classification.sentiment.label.value

    await asyncio.gather(*(one(i, c) for i, (_, c) in enumerate(pairs)))
    for (example, _), label in zip(pairs, labels, strict=True):
        report.add(example.sentiment, label)
    return report, records


def by_shape(
    pairs: Sequence[tuple[Example, Conversation]], report: Report, records: Sequence[Any]
) -> dict[str, tuple[float, float]]:
    """Macro-F1 and LLM share per source and conversation shape (see :func:`placed`)."""
    per_shape = len(pairs) // len(SHAPES)
    groups: dict[str, list[int]] = {}
    for index, (example, _) in enumerate(pairs):
        groups.setdefault(f"{example.source} {SHAPES[index // per_shape]}", []).append(index)
    figures = {}
    for name, indices in groups.items():
        part = Report()
        for i in indices:
            part.add(report.gold[i], report.predicted[i])
        asked = sum(1 for i in indices if records[i] is not None and records[i].llm is not None)
        figures[name] = (part.macro_f1(SENTIMENTS), asked / len(indices))
    return figures


def per_conversation(offline: OfflineClassifier, pairs: Sequence[tuple[Example, Any]]) -> float:
    """Milliseconds per conversation classified offline, in the calling thread."""
    started = time.perf_counter()
    for _, conversation in pairs:
        offline.classify_now(conversation, {})
    return 1000 * (time.perf_counter() - started) / len(pairs)


def figures(name: str, report: Report, documents: int, summary: dict[str, Any]) -> dict[str, Any]:
    """One row of the table."""
    calls = summary.get("llm_calls", 0) or 0
    cost = summary.get("cost_usd") or 0.0
    return {
        "run": name,
        "macro_f1": round(report.macro_f1(SENTIMENTS), 4),
        "llm_share": round(calls / documents, 4),
        "cost_per_1000": round(1000 * cost / documents, 5),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run every configuration (see the module docstring); print and return the figures."""
    measured, stream = measuring_set(args.limit), stream_set(args.limit)
    if args.jargon:
        measured, stream = jargon(measured), jargon(stream)
    sources = {"all": measured + stream}
    rows: list[dict[str, Any]] = []
    async with strong_model(sources, args.accuracy) as simulator:
        overrides = {
            "llm_base_url": simulator.base_url,
            "llm_model": MODEL,
            "dedupe": False,
            "cascade_llm_share": args.share,
            "cascade_audit_share": args.audit,
        }

        def built(name: str) -> Classifier:
            return build_classifier(load_settings({**overrides, "classifier": name}))

        pairs = placed(measured)
        shapes: dict[str, dict[str, tuple[float, float]]] = {}
        for name in ("offline", "llm", "cascade"):
            classifier = built(name)
            report, records = await run_over(classifier, pairs)
            rows.append(figures(name, report, len(pairs), classifier.summary()))
            shapes[name] = by_shape(pairs, report, records)
            await classifier.aclose()
        cascade = built("cascade")
        assert isinstance(cascade, CascadeClassifier)
        _, records = await run_over(cascade, placed(stream))
        offline = cascade.offline
        labelled = [
            # A message's two shapes share an id: both train, or both are held back.
            Labelled(
                doc_id=f"{i % len(stream):06d}",
                turns=tuple(turn.text for turn in conversation.customer),
                label=record.llm.sentiment,
                # As the daemon weighs them (batch_processor.cascade.versions.learn_version).
                weight=1.0 / args.audit if record.route == "audit" else 1.0,
            )
            for i, ((_, conversation), record) in enumerate(
                zip(placed(stream), records, strict=True)
            )
            if record is not None and record.llm is not None
        ]
        shipped = SentimentModel.load()
        outcome = await asyncio.to_thread(
            learn, shipped, offline.sentiment_model, offline.signals, labelled
        )
        print(
            f"learnt from {outcome.trained_on} LLM labels; held back {outcome.held_back}: "
            f"agreement {outcome.agreement:.3f} (shipped {outcome.current_agreement:.3f}; "
            f"wins {outcome.wins}, losses {outcome.losses}, p {outcome.p_value:.3f}), "
            f"{'promoted' if outcome.better else 'not promoted'}"
        )
        await cascade.aclose()
        if outcome.better:
            offline_learnt = built("offline")
            assert isinstance(offline_learnt, OfflineClassifier)
            offline_learnt.sentiment_model = outcome.change.apply(shipped)
            report, _ = await run_over(offline_learnt, pairs)
            rows.append(figures("offline learnt", report, len(pairs), {}))
            before, after = (
                per_conversation(offline, pairs),
                per_conversation(offline_learnt, pairs),
            )
            print(f"offline time per conversation: shipped {before:.3f} ms, learnt {after:.3f} ms")
            await offline_learnt.aclose()
            for share in sorted({args.share, args.share_after}):
                learnt = build_classifier(
                    load_settings(
                        {**overrides, "classifier": "cascade", "cascade_llm_share": share}
                    )
                )
                assert isinstance(learnt, CascadeClassifier)
                learnt.use_model("v1", outcome.change.apply(shipped), outcome.calibration)
                report, _ = await run_over(learnt, pairs)
                rows.append(figures(f"cascade learnt {share:.2f}", report, len(pairs),
                                    learnt.summary()))  # fmt: skip
                await learnt.aclose()
    all_llm_cost = next(r["cost_per_1000"] for r in rows if r["run"] == "llm")
    all_llm_f1 = next(r["macro_f1"] for r in rows if r["run"] == "llm")
    print(f"\n{len(pairs)} conversations ({len(measured)} messages x {len(SHAPES)} shapes), "
          f"simulated LLM right {args.accuracy:.0%}")  # fmt: skip
    print("run                   macro-F1  vs all-LLM  LLM share  cost/1000  vs all-LLM")
    for row in rows:
        cost_share = row["cost_per_1000"] / all_llm_cost if all_llm_cost else 0.0
        print(
            f"{row['run']:<20}{row['macro_f1']:>10.3f}{row['macro_f1'] / all_llm_f1:>12.1%}"
            f"{row['llm_share']:>11.1%}{row['cost_per_1000']:>11.4f}{cost_share:>12.1%}"
        )
    print("\nby source and shape: macro-F1 (cascade: and its LLM share)")
    print("source and shape              offline      LLM   cascade  LLM share")
    for group in shapes["offline"]:
        f1, _ = shapes["cascade"][group]
        print(f"{group:<28}{shapes['offline'][group][0]:>9.3f}{shapes['llm'][group][0]:>9.3f}"
              f"{f1:>10.3f}{shapes['cascade'][group][1]:>11.1%}")  # fmt: skip
    checker = build_classifier(load_settings({**overrides, "classifier": "cascade"}))
    assert isinstance(checker, CascadeClassifier)
    confidence, right = [], []
    for example, conversation in pairs:
        _, prediction = checker.offline.assess(conversation, {})
        sure = max(prediction.probabilities)
        confidence.append(checker.escalation.calibration(sure, prediction.label))
        right.append(prediction.label == example.sentiment)
    await checker.aclose()
    table, ece = reliability(confidence, right)
    print("\ncalibrated offline confidence on the measuring set:")
    print(reliability_text(table, ece))
    return {"rows": rows, "ece": ece, "learnt": outcome.better, "shapes": shapes}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accuracy", type=float, default=0.85)
    parser.add_argument("--share", type=float, default=0.35, help="cascade_llm_share")
    parser.add_argument("--share-after", type=float, default=0.25,
                        help="also measure the learnt version at this share")  # fmt: skip
    parser.add_argument("--audit", type=float, default=0.02, help="cascade_audit_share")
    parser.add_argument("--limit", type=int, help="GoEmotions messages per set")
    parser.add_argument(
        "--jargon",
        action="store_true",
        help="users with words of their own (see JARGON): what learning is for",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
