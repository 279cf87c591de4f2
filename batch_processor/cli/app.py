"""Command line: ``batch-processor [run] [flags]`` and ``batch-processor demo``.

Exit codes: 0 the run ended (failed documents are data, not a failed run); 1 the run stopped on
an error (MongoDB unreachable past the retries, disk full); 2 invalid configuration;
3 an unfinished job needs ``--recover``; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from batch_processor import __version__
from batch_processor.cli.admin import add_admin_commands, run_admin
from batch_processor.cli.demo import demo
from batch_processor.cli.flags import add_setting_flags, setting_overrides
from batch_processor.cli.preview import dry_run
from batch_processor.cli.run import ended, print_summary, run, shows_a_bar
from batch_processor.errors import (
    BatchProcessorError,
    ConfigurationError,
    UnfinishedJobError,
    describe,
)
from batch_processor.runtime.logs import configure_logging
from batch_processor.runtime.shutdown import Stopper
from batch_processor.settings import Settings, load_settings, unknown_variables

log = structlog.get_logger("batch_processor.cli.main")
T = TypeVar("T")
ADMIN_COMMANDS = ("status", "queue", "reclassify", "report", "export", "model")
COMMANDS = ("run", "demo", *ADMIN_COMMANDS)
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNFINISHED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: The demo's database on a MongoDB of your own.
DEMO_DATABASE = "batch_processor_demo"


RUN_EXAMPLES = """examples:
  batch-processor --mongodb-uri mongodb://localhost:27017 --database support
  batch-processor --dry-run --classifier llm --llm-model gpt-4o-mini
  batch-processor --classifier cascade --cascade-llm-share 0.3 --budget-usd 5
  batch-processor --mode continuous --http-port 9464
  batch-processor --mode scheduled --cron "*/15 * * * *"
  batch-processor --recover          # finish an interrupted job first
other commands: demo, status, queue, report, export, reclassify, model"""

#: Seconds the tasks left at the end of a command get to finish once cancelled.
TEARDOWN_SECONDS = 1.0


def run_bounded(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, except that what is left at its end gets a bounded teardown.

    ``asyncio.run`` waits, without a limit, for every task left at the end to finish once
    cancelled; a driver task stuck selecting a server that is gone (pymongo's cursor killer
    during an outage) would hold the exit of a stopped process for its whole timeout. Here
    they get ``TEARDOWN_SECONDS``, then the process goes on to exit.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left, timeout=TEARDOWN_SECONDS))
            for task in left:
                if not task.done():
                    task._log_destroy_pending = False  # type: ignore[attr-defined]  # abandoned
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _run_flags(parser: argparse.ArgumentParser) -> None:
    """Every setting's flag (generated from Settings), plus the config file options."""
    parser.add_argument("--config", type=Path, help="TOML file of settings (below env and flags)")
    parser.add_argument(
        "--print-config", action="store_true", help="print the effective settings and exit"
    )
    add_setting_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with ``run`` and ``demo`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="batch-processor",
        description="Classify a MongoDB collection of support conversations, crash-safely.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser(
        "run",
        help="classify every unprocessed document (the default)",
        usage="batch-processor [run] [options]  (grouped below; examples at the end)",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    """Parse ``argv``; with no subcommand, ``run`` is meant (flags alone are ``run``'s)."""
    args = list(argv)
    if args and not args[0].startswith("-") and args[0] not in COMMANDS:
        close = difflib.get_close_matches(args[0], COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(
            f"batch-processor: unknown command {args[0]!r}{hint}; commands: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG)
    if not args or (args[0] not in COMMANDS and args[0] not in {"-h", "--help", "--version"}):
        args.insert(0, "run")
    return build_parser().parse_args(args)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = setting_overrides(args)
    settings = load_settings(overrides, config_file=args.config)
    if args.command == "demo" and overrides.get("database") is None and settings.mongodb_uri:
        # On your own MongoDB the demo keeps out of the default database. On the embedded
        # server (no URI) it uses the default one, so report, export and the rest, run from
        # the same folder with no flags, read what the demo stored.
        overrides["database"] = DEMO_DATABASE
        settings = load_settings(overrides, config_file=args.config)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``batch-processor`` command."""
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        settings = _settings(args)
    except ConfigurationError as exc:
        print(f"batch-processor: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    unknown = unknown_variables()
    if args.command in ADMIN_COMMANDS:
        configure_logging("WARNING", "console")
        for warning in unknown:
            print(f"batch-processor: warning: {warning}", file=sys.stderr)
        try:
            return run_bounded(run_admin(args, settings))
        except BrokenPipeError:
            # The reader went away (``export | head``): stop quietly, as other tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        except ConfigurationError as exc:
            print(f"batch-processor: {exc.message}", file=sys.stderr)
            return EXIT_CONFIG
        except BatchProcessorError as exc:
            print(f"batch-processor: {describe(exc)}", file=sys.stderr)
            return EXIT_FAILED
    if args.print_config:
        for warning in unknown:
            print(f"batch-processor: warning: {warning}", file=sys.stderr)
        print(json.dumps(settings.masked(), indent=2, default=str))
        return EXIT_OK
    bar = not settings.dry_run and shows_a_bar(settings)
    configure_logging(settings.log_level, settings.log_format.value, beside_a_bar=bar)
    for warning in unknown:
        log.warning(warning)
    return _run(args, settings)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """``run`` (or its ``--dry-run``) and ``demo``; the exit code says how it ended."""
    try:
        if args.command == "demo":
            return run_bounded(demo(settings, count=args.count, seed=args.seed, reset=args.reset))
        if settings.dry_run:
            return run_bounded(dry_run(settings))
        stopper = Stopper()
        stats = run_bounded(run(settings, stopper=stopper))
    except UnfinishedJobError as exc:
        log.error("unfinished job", error=exc.message)
        return EXIT_UNFINISHED
    except ConfigurationError as exc:
        log.error("configuration error", error=exc.message)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BatchProcessorError as exc:
        # An expected failure (MongoDB unreachable past its wait, a full disk): one line.
        log.error("run failed", error=describe(exc))
        return EXIT_FAILED
    except Exception as exc:
        log.error("run failed", error=describe(exc), exc_info=True)
        return EXIT_FAILED
    print_summary(stats)
    return ended(stopper)
