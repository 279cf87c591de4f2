"""The suite's plots (matplotlib, Agg): throughput with 429s and the window, RSS, goodput."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_all(results: dict[str, Any], out: Path) -> list[str]:
    """Draw every plot the results allow; return the files written."""
    written = []
    for key, part in (results.get("goodput") or {}).items():
        if isinstance(part, dict) and "runs" in part:
            written.append(_throughput(part, out / f"throughput_{key}.png"))
            written.append(_goodput_bars(part, out / f"goodput_{key}.png"))
    if isinstance(results.get("workers"), dict):
        written.append(_workers(results["workers"], out / "workers.png"))
    if isinstance(results.get("memory"), dict):
        written.append(_memory(results["memory"], out / "rss.png"))
    return written


def _per_second(events: list[list[float]], status: int) -> tuple[list[int], list[int]]:
    counts = Counter(int(t) for t, s in events if (s == status if status else s not in (200,)))
    if not counts:
        return [], []
    seconds = list(range(0, max(counts) + 1))
    return seconds, [counts.get(s, 0) for s in seconds]


def _throughput(part: dict[str, Any], path: Path) -> str:
    """Per contender (its first run): answers and 429s per second, and the daemon's window."""
    firsts: dict[str, dict[str, Any]] = {}
    for run in part["runs"]:
        firsts.setdefault(run["contender"], run)
    fig, axes = plt.subplots(len(firsts), 1, figsize=(10, 2.6 * len(firsts)), sharex=True)
    for ax, (name, run) in zip(list(getattr(axes, "flat", [axes])), firsts.items(), strict=False):
        x, ok = _per_second(run["events"], 200)
        ax.plot(x, ok, label="answers/s", color="tab:blue")
        x429, limited = _per_second(run["events"], 429)
        ax.bar(x429, limited, color="tab:red", alpha=0.5, label="429s/s")
        ax.axhline(part["capacity"], color="grey", linestyle=":", label="capacity")
        ax.axvline(run["seconds_to_last_result"], color="black", linewidth=0.8)
        windows = [(s["t"], s["extra"].get("governor_window")) for s in run["samples"]]
        windows = [(t, w) for t, w in windows if w is not None]
        if windows:
            twin = ax.twinx()
            twin.plot(*zip(*windows, strict=True), color="tab:green", label="window")
            twin.set_ylabel("governor window")
            twin.set_ylim(bottom=0)
        ax.set_title(f"{name}: goodput {run.get('goodput_pct')} %, {run.get('http_429')} 429s")
        ax.set_ylabel("per second")
        ax.legend(loc="upper left", fontsize="small")
    fig.suptitle(part["workload"] + " (time from process spawn, s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _goodput_bars(part: dict[str, Any], path: Path) -> str:
    """Each run's goodput, by contender."""
    names = list(dict.fromkeys(run["contender"] for run in part["runs"]))
    points = [(names.index(run["contender"]), run["goodput_pct"]) for run in part["runs"]]
    return _goodput_scatter(points, range(len(names)), names, "", part["workload"], path)


def _workers(part: dict[str, Any], path: Path) -> str:
    """Each run's goodput, by number of workers."""
    points = [(run["workers"], run["goodput_pct"]) for run in part["runs"]]
    return _goodput_scatter(points, [1, 2, 4], ["1", "2", "4"], "workers", part["workload"], path)


def _goodput_scatter(
    points: list[tuple[int, float]],
    ticks: Any,
    labels: list[str],
    xlabel: str,
    title: str,
    path: Path,
) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.scatter([x for x, _ in points], [y for _, y in points], color="tab:blue")
    ax.set_xticks(list(ticks), labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("goodput, % of capacity")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _memory(part: dict[str, Any], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, run in part.items():
        if isinstance(run, dict) and run.get("rss_by_documents"):
            docs, rss = zip(*run["rss_by_documents"], strict=True)
            ax.plot(docs, rss, label=f"{name} (+{run['growth_mb_10_to_100pct']} MB)")
    ax.set_xlabel("documents stored")
    ax.set_ylabel("RSS, MB")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name
