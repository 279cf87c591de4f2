"""Command line: ``batch-processor [run] [flags]`` and ``batch-processor demo``.

Exit codes: 0 the run ended (failed documents are data, not a failed run); 1 the run stopped on
an error (MongoDB unreachable past the retries, disk full); 2 invalid configuration;
3 an unfinished job needs ``--recover``; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.table import Table

from batch_processor import __version__
from batch_processor.cli.admin_commands import ADMIN_ARGS, add_admin_commands, run_admin
from batch_processor.errors import (
    BatchProcessorError,
    ConfigurationError,
    UnfinishedJobError,
    describe,
)
from batch_processor.mongo.store import MongoStore
from batch_processor.pipeline.stats import RunStats
from batch_processor.service.logs import configure_logging
from batch_processor.service.progress import RichProgress, wanted
from batch_processor.service.runner import open_store, run_job
from batch_processor.settings import LogFormat, Mode, Settings, load_settings
from batch_processor.testing.samples import sample_conversations

log = structlog.get_logger("batch_processor.cli.main")
COMMANDS = ("run", "demo", "status", "queue")
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNFINISHED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _run_flags(parser: argparse.ArgumentParser) -> None:
    """The seed's flags plus the connection and classifier ones; unset flags defer to config."""
    add = parser.add_argument
    add("--batch-size", type=int, help="documents per page and batch file (default 100)")
    add("--concurrent", type=int, help="classifications in flight (default 8)")
    add("--mode", choices=[m.value for m in Mode], help="batch (default), continuous, scheduled")
    add("--interval", type=float, help="poll interval of continuous mode, seconds")
    add(
        "--no-change-streams",
        dest="change_streams",
        action="store_false",
        default=None,
        help="continuous mode: poll only, do not watch for inserts",
    )
    add("--shutdown-grace", type=float, help="seconds in-flight documents get after SIGTERM")
    add("--cron", help="scheduled mode: cron expression, e.g. '*/15 * * * *'")
    add("--timezone", help="time zone of --cron (default UTC)")
    add("--run-now", action="store_true", default=None, help="scheduled mode: run once at start")
    add("--batch-dir", type=Path, help="directory for batch files, checkpoints, queues")
    add("--checkpoint-interval", type=int, help="documents between checkpoints (default 50)")
    add("--recover", action="store_true", default=None, help="finish an unfinished job first")
    add("--retries", type=int, help="attempts per classifier or MongoDB call (default 3)")
    add("--mongodb-uri", help="MongoDB URI; unset starts the embedded server")
    add("--database", help="database name (default batch_processor)")
    add("--source-collection", help="collection to classify (default conversation_set)")
    add("--target-collection", help="collection for results (default sentimental_analysis)")
    add("--text-field", help="field holding the conversation (default messages)")
    add("--classifier", choices=["offline", "llm"], help="offline (default) or llm")
    add("--llm-model", help="LLM model name (default gpt-4o-mini)")
    add("--llm-base-url", help="OpenAI-compatible endpoint (default: OpenAI)")
    add("--taxonomy", dest="taxonomy_file", type=Path, help="taxonomy TOML file")
    add("--rpm", type=int, help="provider's requests per minute (the governor paces to it)")
    add("--tpm", type=int, help="provider's tokens per minute")
    add("--budget-usd", type=float, help="stop taking documents once this much is spent")
    add(
        "--no-dedupe",
        dest="dedupe",
        action="store_false",
        default=None,
        help="classify identical texts every time",
    )
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    add("--log-format", choices=[f.value for f in LogFormat], help="auto, json or console")
    add(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="never show the progress bar",
    )
    add("--config", type=Path, help="TOML file of settings (below env and flags)")
    add("--print-config", action="store_true", help="print the effective settings and exit")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with ``run`` and ``demo`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="batch-processor",
        description="Classify a MongoDB collection of support conversations, crash-safely.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="classify every unprocessed document (the default)")
    _run_flags(run)
    demo = commands.add_parser("demo", help="load sample conversations, then classify them")
    _run_flags(demo)
    demo.add_argument("--count", type=int, default=500, help="sample documents (default 500)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the sample")
    demo.add_argument(
        "--reset", action="store_true", help="drop the demo's source and target collections first"
    )
    add_admin_commands(commands)
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; with no subcommand, ``run`` is meant."""
    args = list(argv)
    if not args or (args[0] not in COMMANDS and args[0] not in {"-h", "--help", "--version"}):
        args.insert(0, "run")
    return build_parser().parse_args(args)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key not in {"command", "config", "print_config", "count", "seed", "reset", *ADMIN_ARGS}
    }
    if args.command == "demo" and overrides.get("database") is None:
        overrides["database"] = "batch_processor_demo"
    return load_settings(overrides, config_file=args.config)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``batch-processor`` command."""
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        settings = _settings(args)
    except ConfigurationError as exc:
        print(f"batch-processor: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command in {"status", "queue"}:
        configure_logging("WARNING", "console")
        try:
            return asyncio.run(run_admin(args, settings))
        except BatchProcessorError as exc:
            print(f"batch-processor: {describe(exc)}", file=sys.stderr)
            return EXIT_CONFIG if isinstance(exc, ConfigurationError) else EXIT_FAILED
    if args.print_config:
        print(json.dumps(settings.masked(), indent=2, default=str))
        return EXIT_OK
    configure_logging(settings.log_level, settings.log_format.value)
    try:
        if args.command == "demo":
            return asyncio.run(_demo(settings, count=args.count, seed=args.seed, reset=args.reset))
        stats = asyncio.run(_run(settings))
    except UnfinishedJobError as exc:
        log.error("unfinished job", error=exc.message)
        return EXIT_UNFINISHED
    except ConfigurationError as exc:
        log.error("configuration error", error=exc.message)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        log.error("run failed", error=describe(exc), exc_info=True)
        return EXIT_FAILED
    _print_summary(stats)
    return EXIT_OK


async def _run(settings: Settings, store: MongoStore | None = None) -> RunStats:
    # The bar is for a person watching a batch run; service modes log instead.
    show = wanted(settings.progress) and settings.mode is Mode.BATCH
    progress = RichProgress() if show else None
    return await run_job(settings, progress=progress, store=store)


async def _demo(settings: Settings, *, count: int, seed: int, reset: bool) -> int:
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
        stats = await _run(settings, store)
    _print_summary(stats, force=True)
    return EXIT_OK


def _print_summary(stats: RunStats, *, force: bool = False) -> None:
    """A summary table on stdout for a person (the JSON summary is in the log)."""
    if not (force or sys.stdout.isatty()):
        return
    summary: dict[str, Any] = stats.summary()
    table = Table(title="batch_processor run summary", show_header=False)
    for key, value in summary.items():
        shown = (
            ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
            if isinstance(value, dict)
            else value
        )
        table.add_row(key.replace("_", " "), str(shown))
    Console().print(table)
