"""``batch-processor run --dry-run``: the preview printed for a person, and logged."""

from __future__ import annotations

import sys

import structlog
from rich.console import Console
from rich.table import Table
from rich.text import Text

from batch_processor.cli.display import shown
from batch_processor.service.preview import preview
from batch_processor.settings import Settings

log = structlog.get_logger("batch_processor.cli.preview")


async def dry_run(settings: Settings) -> int:
    """Print what a run with ``settings`` would take and cost; write nothing. Exit code 0."""
    found = await preview(settings)
    summary = found.summary(settings.llm_max_output_tokens)
    log.info("dry run: nothing was written", **summary)
    console = Console(file=sys.stdout)
    table = Table(title="dry run: nothing was written", show_header=False)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), shown(value))
    console.print(table)
    for doc_id, text in found.examples:
        # Text objects: a customer's "[...]" is shown as written, never read as markup.
        console.print(Text.assemble((doc_id, "bold"), ": ", text), highlight=False)
    return 0
