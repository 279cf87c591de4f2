"""``batch-processor demo``: load sample conversations into an empty source, then run on them.

After the run it shows what was stored as a support lead reads it (sentiment and trend by
category) and how often the stored labels agree with the ones a person gave the samples.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.table import Table

from batch_processor.cli.run import ended, print_summary, run
from batch_processor.mongo.reports import Scope
from batch_processor.mongo.store import MongoStore
from batch_processor.runtime.shutdown import Stopper
from batch_processor.service.runner import open_store
from batch_processor.settings import Settings
from batch_processor.testing.samples import sample_conversations

log = structlog.get_logger("batch_processor.cli")

SENTIMENTS = ("negative", "neutral", "positive")


async def demo(settings: Settings, *, count: int, seed: int, reset: bool) -> int:
    """Seed sample conversations (into an empty source collection), then run a job on them.

    The exit code: 0, or 130 when a Ctrl-C stopped the run (what was in flight is stored).
    """
    stopper = Stopper()
    async with open_store(settings) as store:
        if reset:
            await store.drop_collections()
        pending = await store.source.count_pending()
        if pending == 0:
            inserted = await store.insert_sources(sample_conversations(count, seed=seed))
            log.info(
                "demo data loaded",
                documents=inserted,
                database=settings.database,
                collection=settings.source_collection,
            )
        else:
            log.info("demo data already pending; not loading more", pending=pending)
        stats = await run(settings, store, stopper)
        print_summary(stats, force=True)
        await print_labels(store)
    print_next_steps(settings)
    return ended(stopper)


def print_next_steps(settings: Settings) -> None:
    """The three commands to run next, ready to paste (from this folder)."""
    command = invoked_as()
    flags = ""
    if settings.mongodb_uri is not None:
        flags = f' --mongodb-uri "$BATCH_PROCESSOR_MONGODB_URI" --database {settings.database}'
    if settings.batch_dir != Path("batch_files"):
        flags += f" --batch-dir {settings.batch_dir}"
    print("\nnext, from this folder (labels and failures; every result; the last job):")
    print(f"  {command} report{flags}")
    print(f"  {command} export --format csv{flags} > results.csv")
    print(f"  {command} status{flags}")


def invoked_as() -> str:
    """How to type this command again: ``.venv/bin/batch-processor`` if it was typed so.

    The README's demo runs ``.venv/bin/batch-processor demo``; a bare ``batch-processor``
    works only with the venv on the ``PATH``.
    """
    typed = sys.argv[0]
    if Path(typed).name != "batch-processor":
        return "batch-processor"  # python -m batch_processor, or a test
    found = shutil.which("batch-processor")
    if found is not None and Path(found).resolve() == Path(typed).resolve():
        return "batch-processor"
    return shlex.quote(typed)


async def print_labels(store: MongoStore) -> None:
    """The stored labels by category, and their agreement with the samples' own labels."""
    by_category: dict[str, Counter[str]] = {}
    agree: Counter[str] = Counter()
    judged: Counter[str] = Counter()
    async for _, result, source in store.reports.export(Scope(), ["expected"]):
        labels = result.get("classification") or {}
        sentiment = (labels.get("sentiment") or {}).get("label")
        row = by_category.setdefault(str(labels.get("category")), Counter())
        row["results"] += 1
        row[str(sentiment)] += 1
        row[str(labels.get("trend"))] += 1
        expected: dict[str, Any] = source.get("expected") or {}
        for field, stored in (
            ("sentiment", sentiment),
            ("category", labels.get("category")),
            ("trend", labels.get("trend")),
        ):
            if field in expected and (field == "trend" or expected[field] is not None):
                judged[field] += 1
                agree[field] += expected[field] == stored
    # Fits 80 columns: a light box, and the category never cut.
    table = Table(
        title="what was stored: the customer's labels",
        box=None,
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("category", no_wrap=True)
    for column in ("results", *SENTIMENTS, "improving", "worsening"):
        table.add_column(column, justify="right")
    for category, row in sorted(by_category.items(), key=lambda item: -item[1]["results"]):
        table.add_row(
            category,
            *(str(row[key]) for key in ("results", *SENTIMENTS, "improving", "worsening")),
        )
    console = Console()
    console.print(table)
    if judged:
        shares = ", ".join(
            f"{field} {100 * agree[field] / judged[field]:.0f} %"
            for field in ("sentiment", "category", "trend")
            if judged[field]
        )
        console.print(f"agrees with the samples' labels: {shares}")
