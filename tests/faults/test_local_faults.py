"""Local faults: a full disk, a read-only batch directory, the writer task dying."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from batch_processor.classifiers import OfflineClassifier
from batch_processor.errors import ResourceError
from batch_processor.service.runner import run_job

from ..conftest import PYMONGO_CLOSE_WHILE_DOWN, conversation, worker_cli
from ..test_retry_queues import outage_run
from .tools import run_root_command, small_tmpfs


async def run_cli(args: list[str]) -> tuple[int, str]:
    """Run a worker to its end; its exit code and its log."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_full_disk_stops_the_run_as_failed_and_gives_everything_back(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path
) -> None:
    """ENOSPC on the batch directory: exit 1, checkpoint and report say failed, no claim left."""
    text = "My order arrived broken and I want a refund. " * 40  # ~1.8 KB a document
    await db.conversation_set.insert_many([conversation(text) for _ in range(200)])
    batch_dir = tmp_path / "small"
    with small_tmpfs(batch_dir, "96k") as mounted:
        if not mounted:
            pytest.skip("this machine cannot mount a tmpfs (the injected-ENOSPC test covers it)")
        code, log = await run_cli(worker_cli(mongo_uri, db_name, batch_dir, "--batch-size", "40"))

        assert code == 1, log[-2000:]
        checkpoint = json.loads((batch_dir / "checkpoint.json").read_text())["checkpoint"]
        assert checkpoint["status"] == "failed"
        assert "No space left" in checkpoint["error"]
        reports = list((batch_dir / "reports").glob("*.json"))
        assert reports and json.loads(reports[0].read_text())["status"] == "failed"
    assert await db.conversation_set.count_documents({"processing.status": "claimed"}) == 0
    done = await db.conversation_set.count_documents({"processing.status": "done"})
    assert done == await db.sentimental_analysis.count_documents({})

    # Room again (a fresh directory): a plain start, no --recover, finishes exactly once.
    code, log = await run_cli(worker_cli(mongo_uri, db_name, tmp_path / "roomy"))
    assert code == 0, log[-2000:]
    assert await db.conversation_set.count_documents({"processing.status": "done"}) == 200
    assert await db.sentimental_analysis.count_documents({}) == 200


async def test_injected_enospc_on_batch_files_fails_the_run_cleanly(
    db: Any, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no tmpfs can be mounted: a batch file write that fails with ENOSPC is the same."""
    await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(100)])
    from batch_processor.files import atomic, batch_files

    real = atomic.atomic_write
    calls = 0

    def failing(path: Path, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            raise ResourceError(f"cannot write {path}: No space left on device")
        real(path, data)

    monkeypatch.setattr(batch_files, "atomic_write", failing)
    settings = make_settings(batch_size=10)
    with pytest.raises(ResourceError, match="No space left"):
        await run_job(settings)

    checkpoint = json.loads((settings.batch_dir / "checkpoint.json").read_text())["checkpoint"]
    assert checkpoint["status"] == "failed" and "No space left" in checkpoint["error"]
    assert await db.conversation_set.count_documents({"processing.status": "claimed"}) == 0


async def test_read_only_batch_directory_is_one_line_and_exit_2(
    db: Any, db_name: str, mongo_uri: str, tmp_path: Path
) -> None:
    """A batch directory that cannot be written is a configuration error naming batch_dir."""
    batch_dir = tmp_path / "ro"
    with small_tmpfs(batch_dir) as mounted:
        if not mounted:
            pytest.skip("this machine cannot mount a read-only tmpfs")
        assert run_root_command(f"mount -o remount,ro {batch_dir}")
        code, log = await run_cli(worker_cli(mongo_uri, db_name, batch_dir))
    assert code == 2
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == 1 and "batch_dir" in lines[0] and "not writable" in lines[0]


@PYMONGO_CLOSE_WHILE_DOWN
async def test_writer_dying_stops_the_run_instead_of_hanging(
    tmp_path: Path, make_settings: Any, db_name: str
) -> None:
    """If the result writer dies (the store queue unwritable in an outage), the run ends.

    Its documents are given back: a later run, with MongoDB back, stores each exactly once.
    """
    async with outage_run(tmp_path, make_settings, db_name) as outage:
        settings = outage.settings
        store_queue = settings.batch_dir / "queues" / "store"
        store_queue.rmdir()
        store_queue.write_text("not a directory")  # the spill to the store queue fails
        outage.classifier.gate.set()
        with pytest.raises(ResourceError):
            await asyncio.wait_for(outage.run, 60)
        checkpoint = json.loads((settings.batch_dir / "checkpoint.json").read_text())
        assert checkpoint["checkpoint"]["status"] == "failed"

        store_queue.unlink()
        await outage.server.start()
        stats = await run_job(settings, classifier=OfflineClassifier())
        assert stats.succeeded == 30
        await outage.assert_all_stored_once(db_name)


class BrokenDisplay:
    """A progress display that fails on every call (a terminal gone away, a rendering bug)."""

    def start(self, total: int) -> None:
        """Fail."""
        raise OSError("display broken")

    def update(self, stats: Any) -> None:
        """Fail."""
        raise OSError("display broken")

    def close(self) -> None:
        """Fail."""
        raise OSError("display broken")


async def test_recover_with_a_corrupt_batch_file_and_a_failing_display_finishes(
    db: Any, make_settings: Any
) -> None:
    """Nothing that only displays can fail a run; an unreadable batch file is set aside."""
    await db.conversation_set.insert_many([conversation(f"refund {i}") for i in range(40)])
    settings = make_settings(batch_size=10, recover=True)
    batches = settings.batch_dir / "batches"
    batches.mkdir(parents=True)
    (batches / "20260101T000000Z-dead00-000001.jsonl").write_bytes(b"\xff\xfe not a batch\n")

    stats = await run_job(settings, progress=BrokenDisplay())

    assert stats.succeeded == 40
    assert [p.name for p in batches.iterdir()] == ["20260101T000000Z-dead00-000001.jsonl.corrupt"]
