"""The suite's summary table, from ``results.json`` (``python -m bench.report <results.json>``)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

COLUMNS = (
    ("goodput_pct", "goodput %"),
    ("requests_per_stored_result", "req/result"),
    ("lost", "lost"),
    ("share_429_pct", "429 %"),
    ("cpu_ms_per_document", "CPU ms/doc"),
    ("commands_per_1000_docs", "cmds/1000"),
    ("seconds_to_first_request", "first req s"),
    ("peak_rss_mb", "RSS MB"),
)


def rows(results: dict[str, Any]) -> list[list[str]]:
    """One row per part and contender: medians over the repeats."""
    table = []
    for key, part in (results.get("goodput") or {}).items():
        if isinstance(part, dict) and "runs" in part:
            table += _group(f"{key}", part["runs"], "contender")
    if isinstance(results.get("workers"), dict):
        table += _group("workers", results["workers"]["runs"], "workers")
    if isinstance(results.get("cpu"), dict):
        table += _group("no limit", results["cpu"]["runs"], "contender", extra="results_per_second")
    return table


def _group(
    part: str, runs: list[dict[str, Any]], by: str, extra: str | None = None
) -> list[list[str]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(str(run[by]), []).append(run)
    out = []
    for name, group in groups.items():
        cells = [part, name]
        for key, _ in COLUMNS:
            values = [run[key] for run in group if run.get(key) is not None]
            cells.append(f"{statistics.median(values):g}" if values else "-")
        if extra:
            cells[2] = f"{statistics.median(run[extra] for run in group):g}/s"
        out.append(cells)
    return out


def print_table(results: dict[str, Any]) -> None:
    """Print the summary as a Markdown table, plus start-up and memory lines."""
    header = ["part", "contender", *(label for _, label in COLUMNS)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows(results):
        print("| " + " | ".join(row) + " |")
    for line in lines(results):
        print(line)
    if results.get("plots"):
        print("plots:", ", ".join(results["plots"]))


def lines(results: dict[str, Any]) -> list[str]:
    """The figures that are not per contender: start-up, the client alone, memory."""
    out = []
    startup = results.get("startup")
    if isinstance(startup, dict):
        for name, value in startup.items():
            if isinstance(value, dict):
                out.append(
                    f"start-up to first request, {name}: median {value['median']} s {value['all']}"
                )
    cpu = results.get("cpu")
    for row in cpu.get("llm_client_alone", []) if isinstance(cpu, dict) else []:
        out.append(
            f"LLM classifier alone, {row['concurrent']} in flight: "
            f"{row['requests_per_second']} requests/s, {row['cpu_ms_per_request']} CPU ms "
            f"per request ({row['cpu_share_of_one_core']} of one core)"
        )
    memory = results.get("memory")
    for name, value in memory.items() if isinstance(memory, dict) else []:
        if isinstance(value, dict):
            out.append(
                f"memory, {name}: {value['documents']} docs, RSS {value['rss_mb_at_10pct']} MB "
                f"at 10 % -> peak {value['rss_mb_peak']} MB "
                f"(+{value['growth_mb_10_to_100pct']} MB), {value['commands_per_1000_docs']} "
                f"cmds/1000, {value['cpu_ms_per_document']} CPU ms/doc"
            )
    return out


if __name__ == "__main__":
    print_table(json.loads(Path(sys.argv[1]).read_text()))
