"""What the results say: label distributions, failures, cost, and a streaming export.

Read-only aggregations over the target collection (results) and the source collection
(failures), for ``batch-processor report`` and ``export``. A time range selects results by
``stored_at`` and failures by ``processing.failed_at``; a job selects both by their job id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from batch_processor.mongo.codec import Raw, encode_id
from batch_processor.mongo.errors import translated
from batch_processor.mongo.source import FAILED, IN_CHUNK, STATE, STATUS

#: The classification fields whose labels are counted, and where each label is stored
#: (themes: each theme once per result).
LABEL_FIELDS = {
    "sentiment": "sentiment.label",
    "category": "category",
    "urgency": "urgency",
    "emotion": "emotion",
    "language": "language",
    "themes": "themes",
    "trend": "trend",
    "resolved": "resolved",
}


@dataclass(frozen=True, slots=True)
class Scope:
    """Which results and failures a report covers (every given condition must hold)."""

    job_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def results(self) -> Raw:
        """The condition on results."""
        return self._match("job_id", "stored_at")

    def failures(self) -> Raw:
        """The condition on failed source documents."""
        return {STATUS: FAILED, **self._match(f"{STATE}.job", f"{STATE}.failed_at")}

    def _match(self, job_field: str, time_field: str) -> Raw:
        query: Raw = {}
        if self.job_id is not None:
            query[job_field] = self.job_id
        span = {
            op: moment
            for op, moment in (("$gte", self.since), ("$lt", self.until))
            if moment is not None
        }
        if span:
            query[time_field] = span
        return query


class Reports:
    """Aggregations over the results and failures of one database."""

    def __init__(self, source: AsyncCollection[Raw], target: AsyncCollection[Raw]) -> None:
        self._source = source
        self._target = target

    async def labels(self, scope: Scope) -> dict[str, dict[str, int]]:
        """Per classification field, how many results carry each label (most common first)."""
        distribution: dict[str, dict[str, int]] = {}
        for name, stored in LABEL_FIELDS.items():
            path = f"$classification.{stored}"
            pipeline: list[Raw] = [{"$match": scope.results()}]
            if name == "themes":
                pipeline.append({"$unwind": path})
            pipeline.append({"$group": {"_id": path, "n": {"$sum": 1}}})
            with translated("count labels"):
                rows = [row async for row in await self._target.aggregate(pipeline)]
            counts = {_label(row["_id"]): int(row["n"]) for row in rows}
            distribution[name] = dict(sorted(counts.items(), key=lambda item: -item[1]))
        return distribution

    async def totals(self, scope: Scope) -> dict[str, Any]:
        """Results, tokens and cost in the scope, and how many came from the dedupe cache."""
        group: Raw = {
            "_id": None,
            "results": {"$sum": 1},
            "input_tokens": {"$sum": "$usage.input_tokens"},
            "cached_tokens": {"$sum": "$usage.cached_tokens"},
            "output_tokens": {"$sum": "$usage.output_tokens"},
            "cost_usd": {"$sum": "$cost_usd"},
            "cached": {"$sum": {"$cond": [{"$eq": ["$cached", True]}, 1, 0]}},
            "truncated": {"$sum": {"$cond": [{"$eq": ["$text.truncated", True]}, 1, 0]}},
            "first_stored": {"$min": "$stored_at"},
            "last_stored": {"$max": "$stored_at"},
        }
        with translated("sum results"):
            pipeline: list[Raw] = [{"$match": scope.results()}, {"$group": group}]
            rows = [row async for row in await self._target.aggregate(pipeline)]
        found: dict[str, Any] = rows[0] if rows else {"results": 0}
        found.pop("_id", None)
        if "cost_usd" in found:
            found["cost_usd"] = round(float(found["cost_usd"] or 0), 6)
        return found

    async def routes(self, scope: Scope) -> list[dict[str, Any]]:
        """Results, tokens and cost per route (online, batch; none for offline and cache hits).

        With the cost per 1,000 results, so the two routes can be compared at a glance.
        """
        group: Raw = {
            "_id": {"$ifNull": ["$route", None]},
            "results": {"$sum": 1},
            "input_tokens": {"$sum": "$usage.input_tokens"},
            "cached_tokens": {"$sum": "$usage.cached_tokens"},
            "output_tokens": {"$sum": "$usage.output_tokens"},
            "cost_usd": {"$sum": "$cost_usd"},
        }
        with translated("sum results by route"):
            pipeline: list[Raw] = [{"$match": scope.results()}, {"$group": group}]
            rows = [row async for row in await self._target.aggregate(pipeline)]
        found = []
        for row in sorted(rows, key=lambda r: -int(r["results"])):
            cost = float(row.get("cost_usd") or 0)
            found.append(
                {
                    "route": row["_id"] or "none (offline or cached)",
                    "results": row["results"],
                    "input_tokens": row.get("input_tokens") or 0,
                    "cached_tokens": row.get("cached_tokens") or 0,
                    "output_tokens": row.get("output_tokens") or 0,
                    "cost_usd": round(cost, 6),
                    "usd_per_1000": round(1000 * cost / row["results"], 6),
                }
            )
        return found

    async def cascade(self, scope: Scope) -> list[dict[str, Any]]:
        """The confidence cascade's figures per taxonomy version (see :mod:`.cascade_reports`)."""
        from batch_processor.mongo.cascade_reports import cascade_report

        return await cascade_report(self._target, scope)

    async def courses(self, scope: Scope) -> list[dict[str, Any]]:
        """How the conversations went, per category (the customer spoke more than once).

        The shares whose sentiment improved, worsened or held, and the LLM's resolved share.
        Results stored before the course was recorded (schema 1) have no trend and are left out.
        """

        def count(field: str, value: str) -> Raw:
            return {"$sum": {"$cond": [{"$eq": [f"$classification.{field}", value]}, 1, 0]}}

        group: Raw = {
            "_id": "$classification.category",
            "results": {"$sum": 1},
            "improving": count("trend", "improving"),
            "worsening": count("trend", "worsening"),
            "steady": count("trend", "steady"),
            "resolved": count("resolved", "yes"),
            "answered": {
                "$sum": {"$cond": [{"$ifNull": ["$classification.resolved", False]}, 1, 0]}
            },
        }
        match = {**scope.results(), "classification.trend": {"$ne": None}}
        with translated("count conversation trends"):
            pipeline: list[Raw] = [{"$match": match}, {"$group": group}]
            rows = [row async for row in await self._target.aggregate(pipeline)]
        found = []
        for row in sorted(rows, key=lambda r: (-int(r["results"]), _label(r["_id"]))):
            total = int(row["results"])
            answered = int(row["answered"])
            found.append(
                {
                    "category": _label(row["_id"]),
                    "results": total,
                    "improving": f"{100 * row['improving'] / total:.0f} %",
                    "worsening": f"{100 * row['worsening'] / total:.0f} %",
                    "steady": f"{100 * row['steady'] / total:.0f} %",
                    "resolved": f"{100 * row['resolved'] / answered:.0f} %" if answered else "-",
                }
            )
        return found

    async def failures(self, scope: Scope, *, top: int = 20) -> list[dict[str, Any]]:
        """Failed documents by error category and reason, with counts (most common first)."""
        pipeline: list[Raw] = [
            {"$match": scope.failures()},
            {
                "$group": {
                    "_id": {"category": f"${STATE}.category", "error": f"${STATE}.error"},
                    "n": {"$sum": 1},
                }
            },
        ]
        with translated("count failures"):
            rows = [row async for row in await self._source.aggregate(pipeline)]
        grouped: list[dict[str, Any]] = [
            {
                "category": row["_id"].get("category") or "UNKNOWN",
                "reason": row["_id"].get("error") or "",
                "documents": int(row["n"]),
            }
            for row in rows
        ]
        grouped.sort(key=lambda row: (-row["documents"], row["category"], row["reason"]))
        return grouped[:top]

    async def export(
        self, scope: Scope, source_fields: Sequence[str] = ()
    ) -> AsyncIterator[tuple[str, Raw, Raw]]:
        """Every result in the scope with its source's fields: (source id, result, fields).

        Streams: one server cursor over the results, and one ``$in`` query per chunk of them
        for the source fields, so memory stays flat for any size.
        """
        projection = {field.split(".")[0]: 1 for field in source_fields}
        chunk: list[Raw] = []
        with translated("export results"):
            async for result in self._target.find(scope.results()).batch_size(IN_CHUNK):
                chunk.append(result)
                if len(chunk) == IN_CHUNK:
                    async for row in self._joined(chunk, projection):
                        yield row
                    chunk = []
            async for row in self._joined(chunk, projection):
                yield row

    async def _joined(
        self, results: list[Raw], projection: Raw
    ) -> AsyncIterator[tuple[str, Raw, Raw]]:
        sources: dict[Any, Raw] = {}
        if projection and results:
            ids = [result["_id"] for result in results]
            cursor = self._source.find({"_id": {"$in": ids}}, projection)
            sources = {raw["_id"]: raw async for raw in cursor}
        for result in results:
            yield encode_id(result["_id"]), result, sources.get(result["_id"], {})


def _label(value: Any) -> str:
    """A label as a table key (a missing field counts as ``(none)``)."""
    return "(none)" if value is None else str(value)
