"""``batch-processor demo``: load sample conversations into an empty source, then run on them."""

from __future__ import annotations

import structlog

from batch_processor.cli.run import print_summary, run
from batch_processor.service.runner import open_store
from batch_processor.settings import Settings
from batch_processor.testing.samples import sample_conversations

log = structlog.get_logger("batch_processor.cli")


async def demo(settings: Settings, *, count: int, seed: int, reset: bool) -> int:
    """Seed sample conversations (into an empty source collection), then run a job on them."""
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
        stats = await run(settings, store)
    print_summary(stats, force=True)
    return 0
