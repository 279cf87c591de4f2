"""What the confidence cascade did, for ``report``: routes, agreement, cost, the threshold.

Per taxonomy version (agreement across taxonomies means nothing): the share of results per
cascade route, how often the offline model agreed with the LLM per sentiment class (on the
escalated documents, and on the random audit, which is the fair estimate for the documents
the LLM did not see), the thresholds applied, the offline model versions that answered, and
the cost per 1,000 results beside what an all-LLM run would have cost at the same price per
request.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from batch_processor.mongo.codec import Raw
from batch_processor.mongo.errors import translated
from batch_processor.mongo.reports import Scope

SENTIMENTS = ("negative", "neutral", "positive")


async def cascade_report(target: AsyncCollection[Raw], scope: Scope) -> list[dict[str, Any]]:
    """One entry per taxonomy version with cascade results in the scope (see the module doc)."""
    match: Raw = {**scope.results(), "cascade": {"$type": "object"}}
    routes: Raw = {
        "_id": {"taxonomy": "$classifier.taxonomy_version", "route": "$cascade.route"},
        "results": {"$sum": 1},
        "cost_usd": {"$sum": "$cost_usd"},
        "threshold_min": {"$min": "$cascade.threshold"},
        "threshold_max": {"$max": "$cascade.threshold"},
        "threshold_mean": {"$avg": "$cascade.threshold"},
        "models": {"$addToSet": "$cascade.model"},
    }
    pairs: Raw = {
        "_id": {
            "taxonomy": "$classifier.taxonomy_version",
            "route": "$cascade.route",
            "offline": "$cascade.offline.sentiment",
            "llm": "$cascade.llm.sentiment",
        },
        "n": {"$sum": 1},
    }
    with translated("sum the cascade's results"):
        by_route = [
            r async for r in await target.aggregate([{"$match": match}, {"$group": routes}])
        ]
        answered = {**match, "cascade.llm": {"$type": "object"}}
        by_pair = [
            r async for r in await target.aggregate([{"$match": answered}, {"$group": pairs}])
        ]
    taxonomies: dict[Any, dict[str, Any]] = defaultdict(dict)
    for row in by_route:
        taxonomies[row["_id"].get("taxonomy")][row["_id"]["route"]] = row
    agreements: dict[Any, list[Raw]] = defaultdict(list)
    for row in by_pair:
        agreements[row["_id"].get("taxonomy")].append(row)
    return [
        _entry(taxonomy, found, agreements[taxonomy])
        for taxonomy, found in sorted(taxonomies.items(), key=lambda item: str(item[0]))
    ]


def _entry(taxonomy: Any, routes: dict[str, Raw], pairs: list[Raw]) -> dict[str, Any]:
    """One taxonomy version's figures."""
    results = sum(int(row["results"]) for row in routes.values())
    cost = sum(float(row["cost_usd"] or 0) for row in routes.values())
    asked = sum(int(routes[r]["results"]) for r in ("llm", "audit") if r in routes)
    asked_cost = sum(float(routes[r]["cost_usd"] or 0) for r in ("llm", "audit") if r in routes)
    thresholds = [row for row in routes.values() if row.get("threshold_mean") is not None]
    models = sorted({str(m) for row in routes.values() for m in row.get("models", [])})
    return {
        "taxonomy_version": taxonomy,
        "results": results,
        "routes": {
            route: {"results": int(row["results"]), "share": round(row["results"] / results, 4)}
            for route, row in sorted(routes.items())
        },
        "llm_share": round(asked / results, 4) if results else 0.0,
        "threshold": {
            "min": min(float(row["threshold_min"]) for row in thresholds),
            "max": max(float(row["threshold_max"]) for row in thresholds),
            "mean": round(
                sum(float(row["threshold_mean"]) * int(row["results"]) for row in thresholds)
                / sum(int(row["results"]) for row in thresholds),
                4,
            ),
        }
        if thresholds
        else None,
        "offline_models": models,
        "usd_per_1000": round(1000 * cost / results, 6) if results else 0.0,
        # What every result would have cost at this run's price per LLM request.
        "all_llm_usd_per_1000": round(1000 * asked_cost / asked, 6) if asked else None,
        "agreement": {
            "escalated": _agreement([p for p in pairs if p["_id"]["route"] == "llm"]),
            "audit": _agreement([p for p in pairs if p["_id"]["route"] == "audit"]),
        },
    }


def _agreement(pairs: list[Raw]) -> dict[str, Any]:
    """How often the offline answer was the LLM's: overall and per class the LLM gave."""
    total = sum(int(p["n"]) for p in pairs)
    same = sum(int(p["n"]) for p in pairs if p["_id"].get("offline") == p["_id"].get("llm"))
    by_class = {}
    for label in SENTIMENTS:
        inside = [p for p in pairs if p["_id"].get("llm") == label]
        n = sum(int(p["n"]) for p in inside)
        if n:
            agreed = sum(int(p["n"]) for p in inside if p["_id"].get("offline") == label)
            by_class[label] = {"documents": n, "agreement": round(agreed / n, 4)}
    return {
        "documents": total,
        "agreement": round(same / total, 4) if total else None,
        "by_class": by_class,
    }
