"""Operator commands: status as JSON, and the dead letter requeued and finished (a round trip)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from batch_processor.service.runner import run_job
from batch_processor.testing.simulator import Simulator, SimulatorConfig

from .conftest import conversation, worker_command


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run an operator command (no BATCH_* from the outside)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    return subprocess.run(
        worker_command(*args), capture_output=True, text=True, timeout=60, env=env, check=False
    )


async def test_status_json_and_requeue_round_trip(
    db: Any, db_name: str, mongo_uri: str, make_settings: Any, tmp_path: Path
) -> None:
    """Failures show in status; requeued by category, the next run stores them all."""
    batch_dir = tmp_path / "batch_files"
    await db.conversation_set.insert_many(
        [conversation(f"refund for order {i}") for i in range(6)] + [{"messages": ""}]
    )
    async with Simulator(SimulatorConfig(latency=0.0, jitter=0.0, context_tokens=50)) as sim:
        settings = make_settings(classifier="llm", llm_base_url=sim.base_url)
        first = await run_job(settings)  # every prompt is too long: DATA, dead-lettered
        assert first.failed == {"DATA": 7}

        where = ["--batch-dir", str(batch_dir), "--mongodb-uri", mongo_uri, "--database", db_name]
        status = json.loads(cli("status", "--json", *where).stdout)
        assert status["job_status"] == "finished" and status["dead_letter"] == 6
        assert status["failed_by_category"] == {"DATA": 7}
        assert status["failed"] == 7 and status["pending"] == 0
        assert status["failed_by_category_in_db"] == {"DATA": 7}

        (group,) = json.loads(cli("queue", "list", "dead", "--json", *where).stdout)
        assert (group["entries"], group["documents"], group["category"]) == (6, 6, "DATA")
        assert len(group["keys"]) == 6 and "context" in group["error"]
        listing = cli("queue", "list", *where).stdout  # one block per error, whole keys
        assert "dead · DATA · 6 entries" in listing and group["keys"][0] in listing
        assert "(+1 more: --json lists all)" in listing
        shown = json.loads(cli("queue", "show", group["keys"][0], *where).stdout)
        assert shown["found_in"] == "dead" and shown["key"] == group["keys"][0]
        (document,) = shown["documents"]  # the id as a person knows it, not escaped JSON
        assert len(document) == 24 and await sources_with_id(db, document) == 1

        requeued = cli("queue", "requeue", "--category", "DATA", "--json", *where)
        assert json.loads(requeued.stdout) == {"requeued": 6}

        sim.config.context_tokens = 128_000  # the cause is fixed
        second = await run_job(settings)

    assert second.recovered_from_queues == 6
    sources = db.conversation_set
    assert await sources.count_documents({"processing.status": "done"}) == 6
    assert await sources.count_documents({"processing.status": "failed"}) == 1  # empty text
    assert (batch_dir / "dead_letter.jsonl").read_text() == ""
    assert json.loads(cli("queue", "list", "--json", *where).stdout) == []


def test_purge_needs_confirmation(tmp_path: Path) -> None:
    """Purge without --yes deletes nothing and exits 2."""
    result = cli("queue", "purge", "classify", "--batch-dir", str(tmp_path))
    assert result.returncode == 2 and "--yes" in result.stdout


def test_status_exits_non_zero_when_the_database_cannot_be_read(tmp_path: Path) -> None:
    """`status` with an unreachable MongoDB still shows the local state, and exits 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    env["BATCH_PROCESSOR_SERVER_SELECTION_TIMEOUT"] = "1"
    command = worker_command("status", "--json", "--batch-dir", str(tmp_path),
                             "--mongodb-uri", "mongodb://127.0.0.1:9/")  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert "database_error" in report and report["batch_dir"] == str(tmp_path)


async def sources_with_id(db: Any, plain: str) -> int:
    """How many source documents have the ObjectId ``plain``."""
    from bson import ObjectId

    return int(await db.conversation_set.count_documents({"_id": ObjectId(plain)}))
