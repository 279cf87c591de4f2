"""The ``model`` subcommand: the cascade's learnt offline model versions.

``model list`` shows every version (the active one marked) with what it was trained on and
how it agreed with the LLM on its held-back slice; ``model learn`` trains a version now from
the stored LLM labels (promoted only if it agrees better); ``model rollback`` makes the
previous version (or ``--to VERSION``, or ``shipped``) active again. Every worker follows the
active version within its next check (half a minute).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from batch_processor.cli.flags import add_setting_flags
from batch_processor.errors import ConfigurationError
from batch_processor.service.runner import open_store
from batch_processor.settings import Settings

#: The settings ``model`` reads: where the database is, the source's text, the taxonomy.
MODEL_FLAGS = {
    "mongodb_uri",
    "database",
    "source_collection",
    "target_collection",
    "cascade_models_collection",
    "text_field",
    "taxonomy_file",
    "cascade_audit_share",
}


def add_model_commands(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``model list|learn|rollback`` to the CLI's subparsers."""
    model = commands.add_parser("model", help="the cascade's learnt offline model versions")
    actions = model.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every version; the active one marked")
    learning = actions.add_parser("learn", help="train a version from the LLM labels now")
    back = actions.add_parser("rollback", help="make the previous version active again")
    back.add_argument("--to", help="this version instead (a name from 'model list', or shipped)")
    for parser in (listing, learning, back):
        common(parser)
        add_setting_flags(parser, only=MODEL_FLAGS)


async def run_model(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | list[Any]:
    """Run ``model list|learn|rollback``; what to print."""
    async with open_store(settings) as store:
        versions = store.models
        if args.action == "list":
            active = await versions.active()
            rows = [_row(raw, active) for raw in await versions.versions()]
            return [{"version": "shipped", "active": "yes" if active == "shipped" else ""}, *rows]
        if args.action == "rollback":
            if args.to is not None and args.to != "shipped" and not await versions.version(args.to):
                raise ConfigurationError(f"no model version {args.to!r}: see 'model list'")
            now = await versions.roll_back(args.to)
            if now is None:
                raise ConfigurationError("nothing to roll back to: no version was ever promoted")
            return {"active": now}
        from batch_processor.service.model_keeper import learn_now  # numpy

        learnt = await learn_now(settings, versions, said=_say)
        if learnt.name is None:
            return {"learnt": "nothing: no LLM labels are stored yet (run --classifier cascade)"}
        return learnt.as_log()


def _say(line: str) -> None:
    """A progress line on stderr (stdout holds the result, maybe as JSON)."""
    print(line, file=sys.stderr, flush=True)


def _row(raw: dict[str, Any], active: str) -> dict[str, Any]:
    """One version as a row of ``model list``."""
    return {
        "version": raw["_id"],
        "active": "yes" if raw["_id"] == active else "",
        "created": str(raw.get("created_at", ""))[:19].replace("T", " "),
        "trained on": raw.get("trained_on"),
        "held back": raw.get("held_back"),
        "agreement": raw.get("agreement"),
        "before": f"{raw.get('active_agreement')} ({raw.get('active_before')})",
    }


def cascade_tables(found: dict[str, Any]) -> list[tuple[str, Any]]:
    """The report's cascade part as (title, rows) tables that read at 80 columns."""
    tables: list[tuple[str, Any]] = []
    model = found.get("offline_model") or {}
    for entry in found.get("cascade", []):
        taxonomy = entry["taxonomy_version"]
        threshold = entry["threshold"] or {}
        all_llm = entry["all_llm_usd_per_1000"]
        summary = {
            "results": entry["results"],
            "LLM share": f"{100 * entry['llm_share']:.1f} %",
            "threshold": (
                f"{threshold['mean']:.3f} (from {threshold['min']:.3f} to {threshold['max']:.3f})"
                if threshold
                else "none"
            ),
            "USD per 1,000": f"{entry['usd_per_1000']:.4f}"
            + (f" (all-LLM estimate {all_llm:.4f})" if all_llm is not None else ""),
            "offline models": ", ".join(entry["offline_models"]),
            "active model": f"{model.get('version')} (held-back agreement "
            f"{model.get('held_back_agreement')})",
        }
        tables.append((f"cascade (taxonomy {taxonomy})", summary))
        routes = [
            {"route": route, "results": row["results"], "share": f"{100 * row['share']:.1f} %"}
            for route, row in entry["routes"].items()
        ]
        tables.append(("cascade routes", routes))
        rows = []
        for label in ("negative", "neutral", "positive"):
            cells = {"LLM said": label}
            for kind in ("escalated", "audit"):
                got = entry["agreement"][kind]["by_class"].get(label)
                cells[f"offline agreed ({kind})"] = (
                    f"{100 * got['agreement']:.0f} % of {got['documents']}" if got else "-"
                )
            rows.append(cells)
        tables.append(("offline vs LLM agreement by sentiment", rows))
    return tables
