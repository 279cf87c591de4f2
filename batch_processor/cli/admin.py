"""The ``status`` and ``queue`` subcommands: their arguments, and printing what they find."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from batch_processor.cli.flags import add_setting_flags
from batch_processor.cli.queue import QueueName, purge, queue_entries, requeue, show_entry
from batch_processor.cli.status import database_status, fleet_status, job_status, with_eta
from batch_processor.errors import BatchProcessorError, describe
from batch_processor.service.runner import open_store
from batch_processor.settings import Settings

QUEUES: list[QueueName] = ["classify", "store", "dead"]


def add_admin_commands(commands: Any) -> None:
    """Add ``status`` and ``queue`` to the CLI's subparsers."""
    status = commands.add_parser("status", help="progress of the current or last job")
    _common(status)
    queue = commands.add_parser("queue", help="list, show, requeue or purge failed work")
    actions = queue.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="entries of a queue (default: all three)")
    listing.add_argument("queue", nargs="?", choices=QUEUES)
    show = actions.add_parser("show", help="one entry in full")
    show.add_argument("key")
    again = actions.add_parser("requeue", help="dead-letter entries back to their retry queue")
    drop = actions.add_parser("purge", help="delete entries of a queue")
    drop.add_argument("queue", choices=QUEUES)
    drop.add_argument("--yes", action="store_true", help="really delete")
    for parser in (again, drop):
        parser.add_argument("--category", help="only entries of this error category")
        parser.add_argument("--id", dest="ids", action="append", help="only this key (repeatable)")
    for parser in (listing, show, again, drop):
        _common(parser)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file of settings")
    parser.add_argument("--json", action="store_true", help="print JSON")
    # status reads MongoDB only when a URI is given; otherwise the batch directory alone.
    add_setting_flags(parser, only={"batch_dir", "mongodb_uri", "database"})


async def run_admin(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``status`` or ``queue ...``; return the exit code."""
    if args.command == "status":
        return await _status(args, settings)
    batch_dir = settings.batch_dir
    if args.action == "list":
        names: list[QueueName] = [args.queue] if args.queue else QUEUES
        rows = [{"queue": name, **row} for name in names for row in queue_entries(batch_dir, name)]
        _print(rows, args.json, title="retry queues and dead letter")
        return 0
    if args.action == "show":
        entry = show_entry(batch_dir, args.key)
        print(json.dumps(entry, indent=2) if entry else f"no entry with key {args.key}")
        return 0 if entry else 1
    if args.action == "requeue":
        moved = requeue(batch_dir, category=args.category, keys=args.ids)
        _print({"requeued": moved}, args.json, title="requeue")
        return 0
    if not args.yes:
        print("purge deletes entries for good; add --yes to confirm")
        return 2
    removed = purge(batch_dir, args.queue, category=args.category, keys=args.ids)
    _print({"purged": removed}, args.json, title="purge")
    return 0


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    report = job_status(settings.batch_dir)
    workers: list[dict[str, Any]] = []
    if settings.mongodb_uri is not None:
        try:
            async with open_store(settings) as store:
                report |= await database_status(store)
                workers = await fleet_status(store)
        except BatchProcessorError as exc:
            report["database_error"] = describe(exc)
    else:
        report["database"] = "not queried: no MongoDB URI (the embedded server is the worker's)"
    if args.json:
        _print(with_eta(report) | {"workers": workers}, True, title="")
        return 0
    _print(with_eta(report), False, title="batch_processor status")
    if workers:
        _print(workers, False, title="workers")
    return 0


def _print(data: Any, as_json: bool, *, title: str) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(title=title)
    keys = list(dict.fromkeys(key for row in rows for key in row))
    if isinstance(data, dict):
        table.add_column("field")
        table.add_column("value")
        for key, value in data.items():
            table.add_row(key.replace("_", " "), str(value))
    else:
        for key in keys:
            table.add_column(key)
        for row in rows:
            table.add_row(*(str(row.get(key, "")) for key in keys))
    Console().print(table)
