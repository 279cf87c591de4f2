"""Reclassify: after a taxonomy or model change, or a fixed cause of failure, crash-safely."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from batch_processor.classifiers import taxonomy as taxonomy_module
from batch_processor.service.runner import run_job
from batch_processor.testing.simulator import Simulator, SimulatorConfig

from .conftest import conversation, worker_cli, worker_command
from .faults.tools import poll_until, quiet_worker


def reclassify(mongo_uri: str, db_name: str, *args: str) -> dict[str, Any]:
    """Run ``reclassify --json`` on the test database; its printed summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    done = subprocess.run(
        worker_command("reclassify", "--json", "--mongodb-uri", mongo_uri, "--database", db_name,
                       *args),
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def bumped_taxonomy(tmp_path: Path) -> Path:
    """The default taxonomy with its version bumped (as after editing it)."""
    default = Path(taxonomy_module.__file__).with_name("customer_support.toml").read_text()
    path = tmp_path / "taxonomy.toml"
    bumped = re.sub(r'^version = ".*"$', 'version = "9999.1.0"', default, count=1, flags=re.M)
    assert bumped != default
    path.write_text(bumped)
    return path


async def test_a_taxonomy_change_reclassifies_old_results_keeping_one_each(
    db: Any, mongo_uri: str, db_name: str, make_settings: Any, tmp_path: Path
) -> None:
    """--outdated takes the old version's results; the old stays until replaced, then history."""
    await db.conversation_set.insert_many([conversation(f"refund order {i}") for i in range(30)])
    await run_job(make_settings())
    taxonomy = bumped_taxonomy(tmp_path)
    outdated = ["--outdated", "--taxonomy", str(taxonomy)]

    preview = reclassify(mongo_uri, db_name, *outdated, "--dry-run")
    assert preview["selected"] == 30 and preview["requeued"] == 0
    assert await db.conversation_set.count_documents({"processing.status": "done"}) == 30

    done = reclassify(mongo_uri, db_name, *outdated)
    assert (done["requeued"], done["kept_in_history"]) == (30, 30)
    again = reclassify(mongo_uri, db_name, *outdated)  # run twice before the documents run
    assert (again["requeued"], again["kept_in_history"], again["skipped_in_flight"]) == (0, 0, 0)
    assert (again["already_pending"], again["already_in_history"]) == (30, 30)
    results = db.sentimental_analysis
    assert await results.count_documents({}) == 30  # the old results are still readable

    stats = await run_job(make_settings(taxonomy_file=taxonomy))

    assert stats.succeeded == 30
    assert await results.count_documents({"classifier.taxonomy_version": "9999.1.0"}) == 30
    assert await results.count_documents({}) == 30
    assert await db.sentimental_analysis_history.count_documents({}) == 30
    assert reclassify(mongo_uri, db_name, *outdated)["selected"] == 0


async def test_a_reclassification_killed_midway_recovers_with_one_new_result_each(
    db: Any, mongo_uri: str, db_name: str, make_settings: Any, tmp_path: Path
) -> None:
    """Offline results moved to the LLM; SIGKILL mid-run, --recover: one LLM result per source."""
    await db.conversation_set.insert_many([conversation(f"late parcel {i}") for i in range(40)])
    await run_job(make_settings())  # offline results
    assert reclassify(mongo_uri, db_name, "--produced-by", "offline")["requeued"] == 40
    batch_dir = tmp_path / "batch_files"
    results = db.sentimental_analysis
    async with Simulator(SimulatorConfig(latency=0.1, jitter=0.0)) as provider:
        llm = ["--classifier", "llm", "--llm-base-url", provider.base_url]
        fast = ["--concurrent", "2", "--batch-size", "10", "--flush-size", "5"]
        command = worker_cli(mongo_uri, db_name, batch_dir, *llm, *fast, "--flush-interval", "0.1")
        async with quiet_worker(command) as worker:

            async def some_replaced() -> bool:
                return bool(await results.count_documents({"classifier.name": "llm"}) >= 5)

            await poll_until(some_replaced, within=60)
            worker.kill()
            await worker.wait()
        assert await results.count_documents({"classifier.name": "offline"}) > 0  # midway
        await run_job(make_settings(classifier="llm", llm_base_url=provider.base_url, recover=True))

    assert await results.count_documents({}) == 40
    assert await results.count_documents({"classifier.name": "llm"}) == 40
    assert await db.sentimental_analysis_history.count_documents({}) == 40
    assert await db.conversation_set.count_documents({"processing.status": "done"}) == 40


async def test_failed_documents_are_classified_again_after_the_cause_is_fixed(
    db: Any, mongo_uri: str, db_name: str, make_settings: Any
) -> None:
    """DATA failures under a wrong --text-field: requeued by category, stored after the fix."""
    await db.conversation_set.insert_many(
        [{"body": f"my card was charged twice {i}"} for i in range(5)]
    )
    first = await run_job(make_settings())
    assert first.failed == {"DATA": 5}

    done = reclassify(mongo_uri, db_name, "--failed", "--category", "DATA")
    second = await run_job(make_settings(text_field="body"))

    assert done["requeued"] == 5 and second.succeeded == 5
    sources = db.conversation_set
    assert await sources.count_documents({"processing.status": "done"}) == 5
    kept = await sources.find_one({})
    assert kept["processing"]["previous_error"] == "text field 'messages' is missing"
    assert "error" not in kept["processing"] and "category" not in kept["processing"]
