"""Every state file, truncated at any offset or with any bit flipped, is detected, never misread."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_processor.errors import ErrorCategory
from batch_processor.files.batch_files import BatchFiles, CorruptBatchFileError
from batch_processor.files.checkpoints import CheckpointStore
from batch_processor.files.identity import worker_identity
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.models import (
    Checkpoint,
    ClassifyRetry,
    DeadLetter,
    JobStatus,
    SourceDocument,
    utcnow,
)

DAMAGE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DOCS = [
    SourceDocument(
        id=f'{{"$oid": "{n:024x}"}}',
        fields={"messages": f"Refund for order {n}, please. Ünïcode ✓", "subject": f"s{n}"},
    )
    for n in range(4)
]


def damage(data: bytes, how: tuple[str, int, int]) -> bytes:
    """Truncate at an offset, or flip one bit of one byte."""
    kind, position, bit = how
    position %= max(1, len(data))
    if kind == "truncate":
        return data[:position]
    return data[:position] + bytes([data[position] ^ (1 << bit)]) + data[position + 1 :]


DAMAGES = st.tuples(st.sampled_from(["truncate", "flip"]), st.integers(0, 10**6), st.integers(0, 7))


def in_temp_dir(check: Callable[[Path], None]) -> None:
    """Run ``check`` in a fresh temporary directory (hypothesis calls a test many times)."""
    with tempfile.TemporaryDirectory() as directory:
        check(Path(directory))


@DAMAGE
@given(how=DAMAGES)
def test_damaged_batch_file_yields_only_intact_documents(how: tuple[str, int, int]) -> None:
    """Each document read back is exactly one that was saved; the rest are counted damaged."""

    def check(root: Path) -> None:
        files = BatchFiles(root)
        name = asyncio.run(files.save("job", 1, DOCS, claim="job:1"))
        path = root / name
        path.write_bytes(damage(path.read_bytes(), how))
        try:
            loaded = files.load(name)
        except CorruptBatchFileError:
            return
        assert all(doc in DOCS for doc in loaded.docs)
        if loaded.claim == "job:1":  # the header is intact: every missing document is counted
            assert len(loaded.docs) + loaded.damaged == len(DOCS)
        else:
            assert loaded.damaged >= 1
        if loaded.damaged == 0:
            assert loaded.docs == DOCS

    in_temp_dir(check)


@DAMAGE
@given(how=DAMAGES)
def test_damaged_queue_entry_is_read_exactly_or_refused(how: tuple[str, int, int]) -> None:
    """A classify-queue entry reads back unchanged, or raises: never a changed document."""

    def check(root: Path) -> None:
        queue = RetryQueues(root).classify
        item = ClassifyRetry(
            doc=DOCS[1], error="TransientError: x", category=ErrorCategory.TRANSIENT
        )
        key = queue.add(item)
        path = queue.directory / f"{key}.json"
        path.write_bytes(damage(path.read_bytes(), how))
        try:
            read = queue.get(key)
        except ValueError:
            return
        assert read.doc == item.doc and read.attempts == item.attempts

    in_temp_dir(check)


@DAMAGE
@given(how=DAMAGES)
def test_damaged_dead_letter_line_is_skipped(how: tuple[str, int, int]) -> None:
    """Dead-letter lines read back unchanged; a damaged one is skipped and counted."""

    def check(root: Path) -> None:
        dead = RetryQueues(root).dead_letter
        entries = [
            DeadLetter(
                queue="classify",
                doc_ids=[doc.id],
                error="DataError: empty",
                category=ErrorCategory.DATA,
                attempts=1,
                item={"n": n},
            )
            for n, doc in enumerate(DOCS)
        ]
        for entry in entries:
            dead.append(entry)
        dead.path.write_bytes(damage(dead.path.read_bytes(), how))
        read = list(dead.entries())
        assert all(entry in entries for entry in read)
        if how[0] == "flip":  # one line damaged (two, if a line end is hit), and counted
            assert len(read) + dead.damaged >= len(entries) - 1 and dead.damaged <= 1
        else:  # a cut keeps whole lines before it and may tear one
            assert read == entries[: len(read)] and dead.damaged <= 1

    in_temp_dir(check)


@DAMAGE
@given(how=DAMAGES)
def test_damaged_checkpoint_falls_back_never_misreads(how: tuple[str, int, int]) -> None:
    """The current checkpoint, or the backup, or none: never a changed one."""

    def check(root: Path) -> None:
        store = CheckpointStore(root)
        first = Checkpoint(job_id="a", started_at=utcnow(), position="p1")
        second = Checkpoint(job_id="b", status=JobStatus.FINISHED, started_at=utcnow())
        store.save(first)
        store.save(second)
        store.path.write_bytes(damage(store.path.read_bytes(), how))
        loaded = CheckpointStore(root).load()
        assert loaded.checkpoint in (first, second, None)
        if loaded.checkpoint == first:
            assert loaded.source == "backup" and loaded.problems

    in_temp_dir(check)


@DAMAGE
@given(how=DAMAGES, both=st.booleans())
def test_damaged_worker_id_keeps_the_identity(how: tuple[str, int, int], both: bool) -> None:
    """A damaged worker_id file keeps the id (from the backup, else the checkpoint's)."""

    def check(root: Path) -> None:
        original = worker_identity(root)
        for name in ("worker_id", "worker_id.bak") if both else ("worker_id",):
            path = root / name
            path.write_bytes(damage(path.read_bytes(), how))
        assert worker_identity(root, fallback=original) == original
        assert worker_identity(root) == original  # repaired on disk

    in_temp_dir(check)
