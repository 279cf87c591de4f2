"""Batch files, checkpoints, retry queues and the atomic primitives, on a real disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from batch_processor.errors import ConfigurationError, ErrorCategory, ResourceError
from batch_processor.files.atomic import atomic_write, exclusive_lock, sweep_temp_files
from batch_processor.files.batch_files import BatchFiles, CorruptBatchFileError
from batch_processor.files.checkpoints import CheckpointStore
from batch_processor.files.identity import worker_identity
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.models import Checkpoint, ClassifyRetry, DeadLetter, SourceDocument, utcnow


def doc(n: int) -> SourceDocument:
    """A small source document."""
    return SourceDocument(id=f'{{"$oid": "{n:024x}"}}', fields={"messages": f"text {n}"})


def checkpoint(job: str, position: str | None = None) -> Checkpoint:
    """A running checkpoint of ``job``."""
    return Checkpoint(job_id=job, started_at=utcnow(), position=position)


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """The target holds the new bytes and no temp file remains."""
    target = tmp_path / "file.json"
    atomic_write(target, b"old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_atomic_write_failure_keeps_old_file_and_raises_resource_error(tmp_path: Path) -> None:
    """A write into a missing directory raises RESOURCE and touches nothing."""
    with pytest.raises(ResourceError) as error:
        atomic_write(tmp_path / "missing" / "file.json", b"x")
    assert error.value.category is ErrorCategory.RESOURCE


def test_sweep_removes_temp_files_a_crash_left(tmp_path: Path) -> None:
    """Stale dot-temp files anywhere below the batch dir are removed; real files stay."""
    (tmp_path / "queues").mkdir()
    stale = [tmp_path / ".checkpoint.json.123.ab.tmp", tmp_path / "queues" / ".x.json.1.cd.tmp"]
    for path in stale:
        path.write_text("partial")
    (tmp_path / "checkpoint.json").write_text("{}")
    in_progress = tmp_path / f".output.jsonl.{os.getpid()}.ef.tmp"  # this process is writing it
    in_progress.write_text("partial")
    assert sorted(sweep_temp_files(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        ["checkpoint.json", in_progress.name]
    )


async def test_batch_file_round_trip_and_delete(tmp_path: Path) -> None:
    """A saved batch reads back identically, names its job and claim, and is gone once deleted."""
    files = BatchFiles(tmp_path)
    name = await files.save("20260101T000000Z-abc123", 7, [doc(1), doc(2)], claim="tok")
    loaded = files.load(name)
    assert loaded.docs == [doc(1), doc(2)] and loaded.job_id == "20260101T000000Z-abc123"
    assert loaded.claim == "tok" and loaded.damaged == 0
    files.delete(name)
    assert files.names() == []


async def test_truncated_batch_file_is_detected(tmp_path: Path) -> None:
    """A batch file missing lines reports them damaged and keeps only the intact documents."""
    files = BatchFiles(tmp_path)
    name = await files.save("job", 1, [doc(1), doc(2), doc(3)])
    path = tmp_path / name
    path.write_bytes(b"\n".join(path.read_bytes().splitlines()[:2]))
    loaded = files.load(name)
    assert loaded.docs == [doc(1)] and loaded.damaged == 2


async def test_unreadable_batch_file_is_corrupt(tmp_path: Path) -> None:
    """A batch file with no readable line at all is reported corrupt."""
    files = BatchFiles(tmp_path)
    name = await files.save("job", 1, [doc(1)])
    (tmp_path / name).write_bytes(b"garbage\n")
    with pytest.raises(CorruptBatchFileError):
        files.load(name)


def test_checkpoint_keeps_previous_good_one_as_backup(tmp_path: Path) -> None:
    """The second save moves the first to the backup."""
    store = CheckpointStore(tmp_path)
    store.save(checkpoint("job", position="a"))
    store.save(checkpoint("job", position="b"))
    backup = json.loads((tmp_path / "checkpoint.json.bak").read_text())
    assert backup["checkpoint"]["position"] == "a"
    assert store.load().checkpoint.position == "b"  # type: ignore[union-attr]


def test_checkpoint_name_is_never_missing_while_saving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between keeping the backup and writing the new file leaves the old checkpoint."""
    store = CheckpointStore(tmp_path)
    store.save(checkpoint("job", position="a"))

    def crash(path: Path, data: bytes) -> None:
        raise ResourceError("simulated crash before the write")

    monkeypatch.setattr("batch_processor.files.checkpoints.atomic_write", crash)
    with pytest.raises(ResourceError):
        store.save(checkpoint("job", position="b"))

    loaded = CheckpointStore(tmp_path).load()
    assert loaded.source == "current" and loaded.checkpoint.position == "a"  # type: ignore[union-attr]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_backup_survives_corruption_of_a_checkpoint_interrupted_mid_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the backup is written: corrupting checkpoint.json in place spares the backup."""
    store = CheckpointStore(tmp_path)
    store.save(checkpoint("job", position="a"))
    store.save(checkpoint("job", position="b"))
    real_write = atomic_write
    calls: list[Path] = []

    def crash_on_second_write(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise ResourceError("simulated crash")
        real_write(path, data)

    monkeypatch.setattr("batch_processor.files.checkpoints.atomic_write", crash_on_second_write)
    with pytest.raises(ResourceError):
        store.save(checkpoint("job", position="c"))
    current = tmp_path / "checkpoint.json"
    current.write_bytes(current.read_bytes()[:40])  # truncated in place

    loaded = CheckpointStore(tmp_path).load()
    assert loaded.source == "backup" and loaded.checkpoint.position == "b"  # type: ignore[union-attr]


def test_corrupt_checkpoint_falls_back_to_backup_and_says_why(tmp_path: Path) -> None:
    """A checksum mismatch is detected; the backup is used and the problem reported."""
    store = CheckpointStore(tmp_path)
    store.save(checkpoint("job", position="a"))
    store.save(checkpoint("job", position="b"))
    path = tmp_path / "checkpoint.json"
    path.write_text(path.read_text().replace('"b"', '"z"'))
    loaded = CheckpointStore(tmp_path).load()
    assert loaded.source == "backup" and loaded.checkpoint.position == "a"  # type: ignore[union-attr]
    assert "checksum mismatch" in loaded.problems[0]


def test_corrupt_current_never_overwrites_good_backup(tmp_path: Path) -> None:
    """After loading from the backup, the next save does not rotate the corrupt file into it."""
    store = CheckpointStore(tmp_path)
    store.save(checkpoint("job", position="a"))
    store.save(checkpoint("job", position="b"))
    (tmp_path / "checkpoint.json").write_text("garbage")
    reopened = CheckpointStore(tmp_path)
    reopened.load()
    reopened.save(checkpoint("job2", position="c"))
    backup = json.loads((tmp_path / "checkpoint.json.bak").read_text())
    assert backup["checkpoint"]["position"] == "a"


def test_no_usable_checkpoint_returns_none_with_problems(tmp_path: Path) -> None:
    """Both files unreadable: no checkpoint, two problems named."""
    (tmp_path / "checkpoint.json").write_text("{")
    (tmp_path / "checkpoint.json.bak").write_text("")
    loaded = CheckpointStore(tmp_path).load()
    assert loaded.checkpoint is None and loaded.source == "none" and len(loaded.problems) == 2


def test_retry_queue_add_replace_remove(tmp_path: Path) -> None:
    """Entries persist one file each, update in place, and disappear when removed."""
    queues = RetryQueues(tmp_path)
    item = ClassifyRetry(doc=doc(1), error="503", category=ErrorCategory.TRANSIENT)
    key = queues.classify.add(item)
    assert queues.classify.pending_keys() == [key]
    queues.classify.replace(key, item.model_copy(update={"attempts": 2}))
    assert RetryQueues(tmp_path).classify.get(key).attempts == 2
    queues.classify.remove(key)
    assert len(queues.classify) == 0


def test_dead_letter_skips_a_torn_last_line(tmp_path: Path) -> None:
    """A crash mid-append leaves a partial line; the complete entries are still read."""
    queues = RetryQueues(tmp_path)
    entry = DeadLetter(
        queue="classify", doc_ids=["1"], error="e", category=ErrorCategory.DATA, attempts=3, item={}
    )
    queues.dead_letter.append(entry)
    with (tmp_path / "dead_letter.jsonl").open("a") as handle:
        handle.write('{"queue": "store", "doc_')
    assert [e.doc_ids for e in queues.dead_letter.entries()] == [["1"]]


def test_batch_directory_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    """While one holder has the lock, another is refused with a CONFIGURATION error."""
    lock = tmp_path / ".lock"
    with (
        exclusive_lock(lock),
        pytest.raises(ConfigurationError, match="in use by another"),
        exclusive_lock(lock),
    ):
        pass
    with exclusive_lock(tmp_path / ".lock"):
        pass  # released when the first holder ended


def test_worker_identity_is_stable_per_directory(tmp_path: Path) -> None:
    """The same batch directory always names the same worker; another gets another."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = worker_identity(tmp_path / "a")
    assert worker_identity(tmp_path / "a") == first
    assert worker_identity(tmp_path / "b") != first
