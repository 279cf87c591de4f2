"""The ``status`` and ``queue`` subcommands: their arguments, and printing what they find."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from batch_processor.cli.display import shown
from batch_processor.cli.flags import add_setting_flags
from batch_processor.cli.models import add_model_commands, cascade_tables, run_model
from batch_processor.cli.queue import (
    QueueName,
    grouped_entries,
    purge,
    requeue,
    show_entry,
    shown_keys,
)
from batch_processor.cli.results import add_result_commands, export, reclassify, report
from batch_processor.cli.status import (
    as_this_directory_knows,
    database_status,
    fleet_status,
    job_status,
    provider_batches,
    with_eta,
)
from batch_processor.errors import BatchProcessorError, ConfigurationError, describe
from batch_processor.files.atomic import lock_holder
from batch_processor.files.layout import Layout
from batch_processor.runtime.embedded import running_address, uri_of
from batch_processor.service.runner import open_store
from batch_processor.settings import Settings

QUEUES: list[QueueName] = ["classify", "store", "dead"]
TOP_LABELS = 15  # labels per field in the report's tables (--json has them all)


def add_admin_commands(commands: Any) -> None:
    """Add ``status`` and ``queue`` to the CLI's subparsers."""
    status = commands.add_parser("status", help="progress of the current or last job")
    _common(status)
    # Without a URI status reads the embedded server's data (the demo's) beside the files.
    add_setting_flags(status, only={"batch_dir", "mongodb_uri", "database", "source_collection"})
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
        # The queues live in the batch directory; the database flags are accepted (and
        # unused) so one set of flags serves every operator command.
        add_setting_flags(parser, only={"batch_dir", "mongodb_uri", "database"})
    add_result_commands(commands, _common)
    add_model_commands(commands, _common)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file of settings")
    parser.add_argument("--json", action="store_true", help="print JSON")


async def run_admin(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``status``, ``queue ...``, ``reclassify``, ``report`` or ``export``; the exit code."""
    if args.command in {"reclassify", "report", "export", "model"}:
        refuse_held_embedded(settings)
    if args.command == "reclassify":
        _print(await reclassify(args, settings), args.json, title="reclassify")
        return 0
    if args.command == "report":
        _print_report(await report(args, settings), args.json)
        return 0
    if args.command == "model":
        _print(await run_model(args, settings), args.json, title=f"model {args.action}")
        return 0
    if args.command == "export":
        written = await export(args, settings)
        if args.output is not None:
            print(f"exported {written} results to {args.output}", file=sys.stderr)
        return 0
    if not settings.batch_dir.is_dir():
        # A mistyped --batch-dir must not read as "nothing queued" (nor be created).
        raise ConfigurationError(
            f"invalid setting batch_dir (--batch-dir / BATCH_PROCESSOR_BATCH_DIR): "
            f"{settings.batch_dir} does not exist"
        )
    if args.command == "status":
        return await _status(args, settings)
    return _queue(args, settings.batch_dir)


def refuse_held_embedded(settings: Settings) -> None:
    """Refuse, in one line, to start an embedded server on data a running worker holds.

    Without a MongoDB URI a command starts the embedded server on the batch directory's data;
    while a worker (the demo, say) runs there, that server cannot open it. The worker's own
    server is reachable: the line says how.
    """
    worker = _embedded_worker(settings)
    if worker is None:
        return
    pid, address = worker
    reach = (
        f"reach its server with --mongodb-uri '{uri_of(address)}'"
        if address
        else "give --mongodb-uri"
    )
    raise ConfigurationError(
        f"a worker (pid {pid}) is running on the embedded server of {settings.batch_dir}: "
        f"wait for it to end, or {reach}"
    )


def _embedded_worker(settings: Settings) -> tuple[int, str | None] | None:
    """The worker running on the batch directory's embedded server: its pid, its address.

    None with a MongoDB URI, or when no live process holds the directory; the address is
    None if the worker's server has not said it (yet).
    """
    if settings.mongodb_uri is not None:
        return None
    layout = Layout(settings.batch_dir)
    holder = lock_holder(layout.lock)
    if holder is None or not holder.alive:
        return None
    return holder.pid, running_address(layout.embedded)


def _status_database(settings: Settings) -> tuple[Settings | None, str | None]:
    """The settings ``status`` reads the database with, and what to say of it.

    With a URI, that database. Without one, the embedded server's data of the batch
    directory: through the running worker's own server while one holds it (status is what
    a person runs during a run), else a server of its own; nothing when there is no data.
    """
    if settings.mongodb_uri is not None:
        return settings, None
    worker = _embedded_worker(settings)
    if worker is not None:
        pid, address = worker
        if address is None:
            return None, "not read: a worker holds the embedded server (give --mongodb-uri)"
        running = settings.model_copy(update={"mongodb_uri": SecretStr(uri_of(address))})
        return running, f"the embedded server of worker pid {pid} ({address})"
    if not (Layout(settings.batch_dir).embedded / "data").is_dir():
        return None, "none yet: no MongoDB URI, and the embedded server has no data here"
    return settings, "the embedded server's data in this batch directory"


def _queue(args: argparse.Namespace, batch_dir: Path) -> int:
    """``queue list|show|requeue|purge``."""
    if args.action == "list":
        names: list[QueueName] = [args.queue] if args.queue else QUEUES
        groups = grouped_entries(batch_dir, names)
        if not groups and not args.json:
            print(f"empty: no entries in the {', '.join(names)} queues")
            return 0
        if args.json:
            _print(groups, True, title="")
        else:
            print(_grouped_text(groups))
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


def _grouped_text(groups: list[dict[str, Any]]) -> str:
    """Grouped entries as text blocks, wrapped at the terminal's width (80 when piped)."""
    width = shutil.get_terminal_size((80, 24)).columns
    blocks = []
    for group in groups:
        times = list(
            dict.fromkeys(_seconds(group[end]) for end in ("first_at", "last_at") if group[end])
        )
        head = (
            f"{group['queue']} · {group['category']} · {group['entries']} entries, "
            f"{group['documents']} documents, at most {group['max_attempts']} "
            + ("attempt" if group["max_attempts"] == 1 else "attempts")
        )
        lines = textwrap.wrap(head, width, subsequent_indent="  ")
        # A time on a line of its own: wrapped, it broke between the date and the hour.
        lines += [f"  {'from ' if len(times) > 1 else 'at '}{' to '.join(times)}"] if times else []
        lines += textwrap.wrap(
            f"error: {group['error']}", width, initial_indent="  ", subsequent_indent="    "
        )
        # Keys are whole (a person copies them): one per line, never broken.
        keys = shown_keys(group["keys"]).splitlines()
        lines += [f"  keys: {keys[0]}", *(f"        {key}" for key in keys[1:])]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _seconds(at: Any) -> str:
    """An ISO time to the second, as ``2026-12-02 12:38:24``."""
    return str(at)[:19].replace("T", " ")


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    report = job_status(settings.batch_dir)
    workers: list[dict[str, Any]] = []
    slices: list[dict[str, Any]] = []
    failed: BatchProcessorError | None = None
    reading, where = _status_database(settings)
    if where is not None:
        report["database"] = where
    if reading is not None:
        try:
            async with open_store(reading) as store:
                report |= await database_status(store)
                workers = await fleet_status(store)
                as_this_directory_knows(workers, settings.batch_dir)
                slices = await provider_batches(store)
        except BatchProcessorError as exc:
            report["database_error"] = describe(exc)
            failed = exc
    if args.json:
        extra = {"workers": workers, "provider_batches": slices}
        _print(with_eta(report) | extra, True, title="")
    else:
        _print(with_eta(report), False, title="batch_processor status")
        if slices:
            _print(slices, False, title="provider batches (Batch API route)")
        if workers:
            # What fits 80 columns; --json has every field.
            compact = [
                {"worker": w["worker"], "state": w["state"], "pid": w.get("pid"),
                 "beat s ago": w.get("last_beat_seconds_ago"), "in flight": w.get("in_flight"),
                 "claims": w.get("claims_in_db"), "done": w.get("done")}
                for w in workers
            ]  # fmt: skip
            _print(compact, False, title="workers (--json: every field)")
    # The local part is shown either way; the exit code says the database was not read.
    if failed is None:
        return 0
    return 2 if isinstance(failed, ConfigurationError) else 1


def _print_report(found: dict[str, Any], as_json: bool) -> None:
    """The report: totals, one table of labels per field, failures by category and reason."""
    if as_json:
        _print(found, True, title="")
        return
    _print({"scope": found["scope"], **found["totals"]}, False, title="results")
    if found.get("routes"):
        rows = [
            {"route": r["route"].split(" (")[0], "results": r["results"],
             "tokens in": r["input_tokens"], "tokens out": r["output_tokens"],
             "USD": r["cost_usd"], "USD per 1,000": r["usd_per_1000"]}
            for r in found["routes"]
        ]  # fmt: skip
        _print(rows, False, title="by route (none: offline or from the cache)")
    for name, counts in found["labels"].items():
        # Themes: a result may have several, so their share is of results, not of mentions.
        total = (
            (found["totals"].get("results") if name == "themes" else None)
            or sum(counts.values())
            or 1
        )
        rows = [
            {name: label, "results": n, "share": f"{100 * n / total:.1f} %"}
            for label, n in list(counts.items())[:TOP_LABELS]
        ]
        more = len(counts) - TOP_LABELS
        if rows:
            _print(
                rows, False, title=f"{name} labels" + (f" (top {TOP_LABELS})" if more > 0 else "")
            )
    if found.get("courses"):
        _print(
            found["courses"],
            False,
            title="how conversations went (the customer spoke more than once), by category",
        )
    for title, rows in cascade_tables(found):
        _print(rows, False, title=title)
    failures = found["failures"]
    if failures:
        _print(failures, False, title="failures by category and reason")
    else:
        print("no failed documents in this scope")


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
            table.add_row(key.replace("_", " "), shown(value))
    else:
        for key in keys:
            # Keys and ids are shown whole (wrapped, never cut with an ellipsis).
            table.add_column(key, overflow="fold")
        for row in rows:
            table.add_row(*(shown(row.get(key)) for key in keys))
    Console().print(table)
