"""An operator's day: a broken setup fails fast and plainly; selecting, previewing, reporting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from batch_processor.errors import ConfigurationError
from batch_processor.service.runner import run_job
from batch_processor.testing.simulator import Simulator, SimulatorConfig

from .conftest import conversation, worker_cli, worker_command
from .faults.tools import poll_until, quiet_worker


def cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the command line (no BATCH_* from the outside, JSON logs)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    environ |= {"BATCH_PROCESSOR_LOG_FORMAT": "json", **env}
    return subprocess.run(
        worker_command(*args),
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        cwd=cwd,
        check=False,
    )


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def errors(stderr: str) -> list[dict[str, Any]]:
    """The error records of a JSON log."""
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [record for record in records if record.get("level") == "error"]


# -- fail fast on a broken setup ---------------------------------------------------------------


async def test_an_llm_endpoint_that_does_not_answer_ends_the_run_with_one_line(
    db: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """Nothing listening at --llm-base-url: exit 2, one error line naming it, nothing claimed."""
    await db.conversation_set.insert_many([conversation(f"hello {i}") for i in range(3)])
    url = f"http://127.0.0.1:{free_port()}/v1"
    done = cli(*worker_cli(mongo_uri, db_name, tmp_path / "b")[3:], "--classifier", "llm",
               "--llm-base-url", url)  # fmt: skip

    assert done.returncode == 2, done.stderr
    (error,) = errors(done.stderr)
    assert url in error["error"] and "cannot be used" in error["error"]
    assert "connection refused" in error["error"] and "timed out" not in error["error"]
    assert await db.conversation_set.count_documents({"processing": {"$exists": True}}) == 0


def test_a_mistyped_database_is_named_and_nothing_is_created(
    mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """A source collection that does not exist: a warning naming it, and no database made."""
    typo = f"{db_name}_typo"
    done = cli(*worker_cli(mongo_uri, typo, tmp_path / "b")[3:])

    assert done.returncode == 0, done.stderr
    assert f"{typo}.conversation_set" in done.stderr and "does not exist" in done.stderr
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongo_uri) as client:
        assert typo not in client.list_database_names()


@pytest.mark.parametrize("command", [["status"], ["queue", "list"]])
def test_admin_commands_say_a_batch_dir_does_not_exist(command: list[str], tmp_path: Path) -> None:
    """A mistyped --batch-dir: exit 2 and one line saying so; the directory is not created."""
    missing = tmp_path / "batch_fils"
    done = cli(*command, "--batch-dir", str(missing))

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"batch-processor: invalid setting batch_dir (--batch-dir / BATCH_PROCESSOR_BATCH_DIR): "
        f"{missing} does not exist"
    ]
    assert not missing.exists()


def test_an_unreachable_mongodb_is_one_short_line_with_host_and_cause(tmp_path: Path) -> None:
    """No server at the URI: exit 1, one error line naming host and cause, no traceback."""
    host = f"127.0.0.1:{free_port()}"
    done = cli("--mongodb-uri", f"mongodb://{host}", "--server-selection-timeout", "1",
               "--batch-dir", str(tmp_path / "b"))  # fmt: skip

    assert done.returncode == 1
    (error,) = errors(done.stderr)
    assert host in error["error"] and "refused" in error["error"].lower()
    assert len(done.stderr.strip().splitlines()) <= 3 and len(error["error"]) < 400
    assert "Traceback" not in done.stderr and "Topology" not in done.stderr


def test_a_batch_dir_that_cannot_be_written_exits_2_with_one_line(tmp_path: Path) -> None:
    """The batch directory cannot be created or written: exit 2, one line naming it."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a file where the directory's parent should be: even root fails
    done = cli("--batch-dir", str(blocker / "batch_files"), "--mongodb-uri", "mongodb://x")

    assert done.returncode == 2
    (error,) = errors(done.stderr)
    assert "batch_dir" in error["error"] and "not writable" in error["error"]


def test_unknown_batch_variables_are_named(tmp_path: Path) -> None:
    """A typo in .env or the environment is warned about by name, with the likely meaning."""
    (tmp_path / ".env").write_text("BATCH_PROCESSOR_BATCH_SIZ=5\n")
    (tmp_path / "b").mkdir()
    done = cli(
        "status", "--batch-dir", str(tmp_path / "b"), cwd=tmp_path, BATCH_PROCESSOR_CONCURENT="4"
    )

    assert done.returncode == 0, done.stderr
    assert (
        "unknown variable BATCH_PROCESSOR_BATCH_SIZ in .env is ignored "
        "(did you mean BATCH_PROCESSOR_BATCH_SIZE?)" in done.stderr
    )
    assert "unknown variable BATCH_PROCESSOR_CONCURENT in the environment" in done.stderr
    assert "BATCH_PROCESSOR_CONCURRENT" in done.stderr


def test_a_six_field_cron_is_refused_as_ambiguous(tmp_path: Path) -> None:
    """'*/10 * * * * *' reads as seconds to some tools, minutes to others: refused, explained."""
    done = cli("--mode", "scheduled", "--cron", "*/10 * * * * *", "--mongodb-uri", "mongodb://x",
               "--batch-dir", str(tmp_path / "b"))  # fmt: skip

    assert done.returncode == 2
    (error,) = errors(done.stderr)
    assert "six fields" in error["error"] and "Quartz" in error["error"]


# -- select, preview ---------------------------------------------------------------------------


async def test_filter_and_limit_select_the_work(db: Any, make_settings: Any) -> None:
    """--filter takes only matching documents, --limit at most N; the rest stay pending."""
    chats = [conversation(f"chat {i}") | {"channel": "chat"} for i in range(20)]
    await db.conversation_set.insert_many(chats + [conversation(f"mail {i}") for i in range(20)])

    first = await run_job(make_settings(source_filter='{"channel": "chat"}', limit=7))
    second = await run_job(make_settings(source_filter={"channel": "chat"}))

    assert (first.succeeded, second.succeeded) == (7, 13)
    sources = db.conversation_set
    assert await sources.count_documents({"channel": "chat", "processing.status": "done"}) == 20
    assert await sources.count_documents({"channel": "email", "processing": {"$exists": 1}}) == 0


async def test_a_filter_the_server_rejects_names_the_setting(db: Any, make_settings: Any) -> None:
    """An operator the server does not know stops the run before any claim, naming --filter."""
    await db.conversation_set.insert_many([conversation("hello")])
    with pytest.raises(ConfigurationError, match="source_filter"):
        await run_job(make_settings(source_filter={"channel": {"$nosuchop": 1}}))
    assert await db.conversation_set.count_documents({"processing": {"$exists": 1}}) == 0


async def test_reclassify_with_a_filter_the_server_rejects_exits_2(
    db: Any, mongo_uri: str, db_name: str
) -> None:
    """A filter the server rejects: reclassify says so in one line, exit 2 (as run does)."""
    await db.conversation_set.insert_many([conversation("hello")])
    where = ["--mongodb-uri", mongo_uri, "--database", db_name]
    done = cli("reclassify", "--all", "--filter", '{"channel": {"$nosuchop": 1}}', *where)
    assert done.returncode == 2, done.stderr
    assert "source_filter" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ('{"processing.status": "done"}', "reclassify"),
        ('{"$expr": {"$eq": ["$processing.status", "done"]}}', "reclassify"),
        ('{"$and": [{"$or": [{"processing": {"$exists": true}}]}]}', "reclassify"),
        ('{"a": ' * 5_000 + "1" + "}" * 5_000, "nested more than 100 levels"),
        ('{"a": {"$in": ' + "[" * 3_000 + "]" * 3_000 + "}}", "nested more than 100 levels"),
    ],
)
def test_a_filter_on_the_processing_state_or_too_deep_is_refused(
    tmp_path: Path, query: str, said: str
) -> None:
    """A filter on the processing state (even in $expr) or too deep: one line, exit 2."""
    done = cli("--filter", query, "--batch-dir", str(tmp_path))
    assert done.returncode == 2 and said in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


async def test_dry_run_counts_estimates_and_writes_nothing(
    db: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """--dry-run: what would be taken, its tokens and cost, sample texts; nothing written."""
    await db.conversation_set.insert_many(
        [conversation(f"my parcel {i} never arrived, refund me") for i in range(50)]
        + [{"body": "no messages field"}, {"body": "nor here"}]
    )
    batch_dir = tmp_path / "b"
    done = cli(*worker_cli(mongo_uri, db_name, batch_dir)[3:], "--dry-run", "--classifier", "llm",
               "--llm-model", "gpt-4o-mini", "--limit", "40")  # fmt: skip

    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(x) for x in done.stderr.splitlines() if "dry run" in x]
    assert record["pending"] == 52 and record["would_take"] == 40 and record["sampled"] == 40
    assert record["llm_input_tokens"] > 40 * 100 and record["llm_cost_usd"] > 0
    assert record["llm_cost_usd"] < record["llm_cost_max_usd"]
    assert "my parcel 0 never arrived" in done.stdout
    cascade = cli(*worker_cli(mongo_uri, db_name, batch_dir)[3:], "--dry-run", "--classifier",
                  "cascade", "--llm-model", "gpt-4o-mini", "--limit", "40")  # fmt: skip
    (estimate,) = [json.loads(x) for x in cascade.stderr.splitlines() if "dry run" in x]
    # The cascade's estimate is for the share of documents it sends to the LLM.
    assert estimate["cascade_llm_share"] == 0.35
    assert estimate["llm_cost_usd"] == pytest.approx(0.35 * record["llm_cost_usd"], rel=0.01)
    offline = cli(*worker_cli(mongo_uri, db_name, batch_dir)[3:], "--dry-run", "--classifier",
                  "offline", "--llm-model", "gpt-4o-mini", "--limit", "40")  # fmt: skip
    (free,) = [json.loads(x) for x in offline.stderr.splitlines() if "dry run" in x]
    # An offline run costs nothing; what an LLM run would cost is labelled as such.
    assert free["cost_usd"] == 0.0 and "llm_cost_usd" not in free
    assert free["an_llm_run_would_cost_usd"] == record["llm_cost_usd"]
    assert await db.conversation_set.count_documents({"processing": {"$exists": 1}}) == 0
    assert "sentimental_analysis" not in await db.list_collection_names()
    assert [index["name"] async for index in await db.conversation_set.list_indexes()] == ["_id_"]
    assert not batch_dir.exists()


# -- results you can read ----------------------------------------------------------------------


async def test_report_and_export_read_the_stored_results(
    db: Any, db_name: str, mongo_uri: str, make_settings: Any, tmp_path: Path
) -> None:
    """report: labels per field, failures by reason, totals; export: every result, streamed."""
    await db.conversation_set.insert_many(
        [conversation(f"where is my order {i}? it is late") for i in range(20)]
        + [{"messages": ""}, {"messages": ""}, {"messages": 7}]
    )
    await run_job(make_settings())
    job_id = (await db.sentimental_analysis.find_one())["job_id"]
    where = ["--mongodb-uri", mongo_uri, "--database", db_name]

    found = json.loads(cli("report", "--json", *where).stdout)
    assert found["totals"]["results"] == 20
    assert all(sum(found["labels"][name].values()) == 20 for name in ("sentiment", "category"))
    assert found["failures"][0] == {
        "category": "DATA",
        "reason": "text field 'messages' is empty",
        "documents": 2,
    }
    assert len(found["failures"]) == 2
    job = json.loads(cli("report", "--json", "--job", job_id, *where).stdout)
    assert job["totals"]["results"] == 20
    later = json.loads(cli("report", "--json", "--since", "2999-01-01", *where).stdout)
    assert later["totals"]["results"] == 0 and later["failures"] == []

    out = tmp_path / "results.jsonl"
    exported = cli("export", "-o", str(out), "--source-fields", "channel", *where)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ids = {str(doc["_id"]) async for doc in db.sentimental_analysis.find({}, {"_id": 1})}
    assert {row["source_id"] for row in rows} == ids  # plain ids, one row per result
    assert {row["channel"] for row in rows} == {"email"} and rows[0]["sentiment"]
    table = cli("export", "--format", "csv", *where).stdout.splitlines()
    assert table[0].startswith("source_id,sentiment,") and len(table) == 21


def test_an_empty_queue_listing_says_empty(tmp_path: Path) -> None:
    """Queue list on an empty batch directory says so in words."""
    (tmp_path / "b").mkdir()
    done = cli("queue", "list", "--batch-dir", str(tmp_path / "b"))
    assert done.returncode == 0 and done.stdout.startswith("empty:")


# -- service details ---------------------------------------------------------------------------


async def test_status_tells_a_killed_workers_job_from_a_running_one(
    db: Any, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """While the worker runs: running, its process alive; after SIGKILL: interrupted, dead."""
    await db.conversation_set.insert_many([conversation(f"hi {i}") for i in range(40)])
    batch_dir = tmp_path / "b"
    async with (
        Simulator(SimulatorConfig(latency=0.3, jitter=0.0)) as provider,
        quiet_worker(
            worker_cli(mongo_uri, db_name, batch_dir, "--classifier", "llm", "--llm-base-url",
                       provider.base_url, "--concurrent", "1", "--checkpoint-interval", "1")
        ) as worker,
    ):  # fmt: skip

        async def running() -> bool:
            done = cli("status", "--json", "--batch-dir", str(batch_dir))
            return done.returncode == 0 and json.loads(done.stdout).get("job_status") == "running"

        await poll_until(running, within=60)
        alive = json.loads(cli("status", "--json", "--batch-dir", str(batch_dir)).stdout)
        worker.kill()
        await worker.wait()
    dead = json.loads(cli("status", "--json", "--batch-dir", str(batch_dir)).stdout)

    assert alive["worker_process"] == f"pid {worker.pid}, alive"
    assert dead["worker_process"] == f"pid {worker.pid}, dead"
    assert dead["job_status"].startswith("interrupted") and "--recover" in dead["job_status"]
