"""``reclassify``, ``report`` and ``export``: working with the results already stored."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from batch_processor.cli.flags import add_setting_flags
from batch_processor.errors import ConfigurationError
from batch_processor.models import Classification
from batch_processor.mongo.codec import json_safe
from batch_processor.mongo.model_versions import MongoModelVersions
from batch_processor.mongo.reports import Scope
from batch_processor.mongo.requeue import Selection
from batch_processor.plain_ids import plain_id
from batch_processor.service.classifier_setup import classifier_identity
from batch_processor.service.runner import open_store
from batch_processor.settings import Settings

#: The settings these commands read: where the database is, and the current classifier.
DATABASE_SETTINGS = {
    "mongodb_uri",
    "database",
    "source_collection",
    "target_collection",
    "history_collection",
    "batch_dir",
    "embedded_port",
}
CLASSIFIER_SETTINGS = {"classifier", "llm_model", "taxonomy_file"}


def add_result_commands(commands: Any, common: Any) -> None:
    """Add ``reclassify``, ``report`` and ``export`` to the CLI's subparsers."""
    again = commands.add_parser(
        "reclassify",
        help="classify done (or failed) documents again; results stay until replaced",
        description="Make the selected documents pending again: the next run (or a running "
        "service) classifies them. Each result stays in the target collection until its new "
        "one replaces it, and is copied to the history collection first. Select with at "
        "least one option; they combine (all must hold).",
    )
    which = again.add_argument_group("selection")
    which.add_argument(
        "--outdated",
        action="store_true",
        help="results not produced by the current classifier, version, model and taxonomy "
        "(as --classifier, --llm-model and --taxonomy say)",
    )
    which.add_argument("--produced-by", metavar="NAME", help="results of this classifier")
    which.add_argument("--classifier-version", metavar="V", help="... of this classifier/prompt")
    which.add_argument("--model", metavar="MODEL", help="... of this LLM model")
    which.add_argument("--taxonomy-version", metavar="V", help="... under this taxonomy version")
    which.add_argument("--failed", action="store_true", help="failed documents, not done ones")
    which.add_argument("--category", metavar="CAT", help="with --failed: this error category")
    which.add_argument("--all", action="store_true", help="every done document")
    common(again)
    add_setting_flags(
        again,
        only=DATABASE_SETTINGS | CLASSIFIER_SETTINGS | {"source_filter", "limit", "dry_run"},
    )

    report = commands.add_parser(
        "report", help="labels, failures, tokens and cost of the stored results"
    )
    export = commands.add_parser(
        "export", help="stream results with their source ids to JSON Lines or CSV"
    )
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--output", "-o", type=Path, help="file to write (default: stdout)")
    export.add_argument(
        "--source-fields", metavar="A,B", default="", help="source fields to add to each row"
    )
    for parser in (report, export):
        parser.add_argument("--job", metavar="JOB_ID", help="only this job's results")
        parser.add_argument("--since", type=_moment, help="stored at or after (ISO 8601)")
        parser.add_argument("--until", type=_moment, help="stored before (ISO 8601)")
        common(parser)
        add_setting_flags(parser, only=DATABASE_SETTINGS)


def selection(args: argparse.Namespace, settings: Settings) -> Selection:
    """The documents ``reclassify`` was asked for; ConfigurationError when none is named."""
    given = [
        args.outdated,
        args.produced_by,
        args.classifier_version,
        args.model,
        args.taxonomy_version,
        args.failed,
        args.all,
        settings.source_filter,
    ]
    if not any(given):
        raise ConfigurationError(
            "reclassify needs a selection: --outdated, --produced-by, --classifier-version, "
            "--model, --taxonomy-version, --failed, --filter or --all"
        )
    if args.category and not args.failed:
        raise ConfigurationError("--category selects failed documents: add --failed")
    return Selection(
        failed=args.failed,
        category=args.category,
        produced_by=args.produced_by,
        classifier_version=args.classifier_version,
        model=args.model,
        taxonomy_version=args.taxonomy_version,
        outdated_from=classifier_identity(settings) if args.outdated else None,
        source_filter=settings.source_filter or {},
        limit=settings.limit,
    )


async def reclassify(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Requeue the selection (or count it, with ``--dry-run``); what was done, for printing."""
    chosen = selection(args, settings)
    async with open_store(settings) as store:
        done = await store.reclassification.run(chosen, dry_run=settings.dry_run)
    summary: dict[str, Any] = {
        "selected": done.selected,
        "requeued": done.requeued,
        "kept_in_history": done.kept_in_history,
        "skipped_in_flight": done.skipped_in_flight,
    }
    if done.already_pending or done.already_in_history:  # reclassify run again before a run
        summary["already_pending"] = done.already_pending
        summary["already_in_history"] = done.already_in_history
    if settings.dry_run:
        summary["dry_run"] = "nothing was changed"
    elif done.requeued:
        summary["next"] = "batch-processor run (a running service takes them within --interval)"
    return summary


async def report(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The labels, failures, tokens and cost of the results in the scope."""
    scope = Scope(job_id=args.job, since=args.since, until=args.until)
    async with open_store(settings) as store:
        given = {"job": args.job, "since": args.since, "until": args.until}
        if not (await store.source_presence()).exists:
            raise ConfigurationError(
                f"the source collection {store.source_name} does not exist: check --database "
                "and --source-collection"
            )
        cascade = await store.reports.cascade(scope)
        found = {
            "scope": {key: value for key, value in given.items() if value is not None} or "all",
            "totals": await store.reports.totals(scope),
            "routes": await store.reports.routes(scope),
            "labels": await store.reports.labels(scope),
            "courses": await store.reports.courses(scope),
            "failures": await store.reports.failures(scope),
        }
        if cascade:
            found["cascade"] = cascade
            found["offline_model"] = await active_model(store.models)
        return found


async def active_model(models: MongoModelVersions) -> dict[str, Any]:
    """The active offline model version and how it agreed with the LLM when it was promoted."""
    name = await models.active()
    stored = await models.version(name) if name != "shipped" else None
    return {
        "version": name,
        "held_back_agreement": stored.get("agreement") if stored else None,
        "trained_on": stored.get("trained_on") if stored else None,
    }


async def export(args: argparse.Namespace, settings: Settings) -> int:
    """Stream the results in the scope to ``--output`` (or stdout); return how many."""
    scope = Scope(job_id=args.job, since=args.since, until=args.until)
    fields = [name.strip() for name in args.source_fields.split(",") if name.strip()]
    written = 0
    async with open_store(settings) as store:
        with _output(args.output) as out:
            write = _csv_writer(out, fields) if args.format == "csv" else _jsonl_writer(out)
            async for doc_id, result, source in store.reports.export(scope, fields):
                write(_row(doc_id, result, source, fields))
                written += 1
    return written


def _row(
    doc_id: str, result: dict[str, Any], source: dict[str, Any], fields: list[str]
) -> dict[str, Any]:
    """One exported row: the source id, the labels, who produced them, what they cost."""
    classification = result.get("classification") or {}
    producer = result.get("classifier") or {}
    usage = result.get("usage") or {}
    row: dict[str, Any] = {"source_id": plain_id(doc_id)}
    row |= {name: classification.get(name) for name in Classification.model_fields}
    sentiment = row.pop("sentiment", None)
    sentiment = sentiment if isinstance(sentiment, dict) else {}
    row = {
        "source_id": row.pop("source_id"),
        "sentiment": sentiment.get("label"),
        "sentiment_score": sentiment.get("score"),
        **row,
    }
    row |= {
        "classifier": producer.get("name"),
        "classifier_version": producer.get("version"),
        "model": producer.get("model"),
        "taxonomy_version": producer.get("taxonomy_version"),
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "cost_usd": result.get("cost_usd"),
        "customer_turns": ((result.get("text") or {}).get("turns") or {}).get("customer"),
        "schema_version": result.get("schema_version", 1),
        "job_id": result.get("job_id"),
        "stored_at": result.get("stored_at"),
    }
    for name in fields:
        value: Any = source
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        row[name] = value
    return {key: _plain(value) for key, value in row.items()}


def _plain(value: Any) -> Any:
    """A value as JSON and CSV want it: times in ISO 8601, other BSON types as plain JSON."""
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return json_safe(value)


def _jsonl_writer(out: IO[str]) -> Any:
    def write(row: dict[str, Any]) -> None:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")

    return write


def _csv_writer(out: IO[str], fields: list[str]) -> Any:
    columns = list(_row('"x"', {}, {}, fields))
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()

    def write(row: dict[str, Any]) -> None:
        writer.writerow({k: ";".join(v) if isinstance(v, list) else v for k, v in row.items()})

    return write


@contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    """The file to export to (written whole under a temporary name, then renamed), or stdout."""
    if path is None:
        yield sys.stdout
        return
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            yield out
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _moment(text: str) -> datetime:
    """An ISO 8601 date or time (UTC when no zone is given)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
