"""Retry queues and the dead letter, on disk.

A queue is a directory with one atomically written JSON file per entry, so adding, updating and
removing an entry are each one crash-safe file operation and no queue file is ever rewritten as
a whole. The ``classify`` queue holds documents whose classification failed after its retries;
the ``store`` queue holds computed results MongoDB did not take, so none is lost during an
outage. The dead letter is an append-only JSON Lines file of items that failed past the limit.

Every entry and every dead-letter line carries a ``sha256`` of the rest of it, so a flipped
byte is detected instead of turning into a changed text or a lost result: a damaged entry is
set aside (kept for a person) and its documents, still claimed by this worker, are released
and read again from MongoDB; a damaged dead-letter line is skipped and counted.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from batch_processor.files.atomic import (
    append_durable,
    atomic_write,
    ensure_dir,
    read_lines,
    remove_durable,
)
from batch_processor.models import ClassifyRetry, DeadLetter, StoreRetry, utcnow

SUFFIX = ".json"

Item = TypeVar("Item", bound=BaseModel)


def seal(model: BaseModel) -> bytes:
    """``model`` as JSON with a ``sha256`` of its other fields."""
    body = json.loads(model.model_dump_json())
    body["sha256"] = _digest(body)
    return json.dumps(body).encode()


def unseal(raw: bytes) -> dict[str, object]:
    """The fields of a sealed record; raise ValueError if it is damaged.

    Records written before checksums (no ``sha256``) are accepted as they are.
    """
    try:
        body = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    digest = body.pop("sha256", None)
    if digest is not None and digest != _digest(body):
        raise ValueError("checksum mismatch (damaged or edited)")
    return body


def _digest(body: object) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class RetryQueue(Generic[Item]):
    """A directory of retry entries of one model type, oldest first."""

    def __init__(self, directory: Path, model: type[Item]) -> None:
        self.directory = ensure_dir(directory)
        self.model = model
        self.name = directory.name
        # The keys present, kept in memory once read: the directory is locked by one process,
        # so sizes are known without touching the disk (a metrics scrape reads them).
        self._keys: set[str] | None = None

    def add(self, item: Item) -> str:
        """Persist a new entry and return its key."""
        key = f"{utcnow():%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"
        self.replace(key, item)
        return key

    def replace(self, key: str, item: Item) -> None:
        """Overwrite an entry (after another failed attempt)."""
        atomic_write(self.directory / f"{key}{SUFFIX}", seal(item))
        if self._keys is not None:
            self._keys.add(key)

    def remove(self, key: str) -> None:
        """Delete an entry that has ended."""
        remove_durable(self.directory / f"{key}{SUFFIX}")
        if self._keys is not None:
            self._keys.discard(key)

    def pending_keys(self) -> list[str]:
        """Keys of the entries present, oldest first (read from the directory)."""
        keys = sorted(path.stem for path in self.directory.glob(f"*{SUFFIX}"))
        self._keys = set(keys)
        return keys

    def __len__(self) -> int:
        """Entries present (from memory once the directory was read)."""
        if self._keys is None:
            return len(self.pending_keys())
        return len(self._keys)

    def get(self, key: str) -> Item:
        """Read one entry; raise ValueError if it is unreadable or damaged."""
        try:
            return self.model.model_validate(
                unseal((self.directory / f"{key}{SUFFIX}").read_bytes())
            )
        except (OSError, ValueError, ValidationError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"retry entry {self.name}/{key} is unreadable: {reason}") from None

    def set_aside(self, key: str) -> Path:
        """Rename an unreadable entry so that it is kept for a person and not read again."""
        path = self.directory / f"{key}{SUFFIX}"
        target = path.with_name(path.name + ".corrupt")
        path.replace(target)
        if self._keys is not None:
            self._keys.discard(key)
        return target


class DeadLetterFile:
    """The append-only file of items that failed past their retry limit."""

    def __init__(self, path: Path) -> None:
        ensure_dir(path.parent)
        self.path = path
        #: Lines skipped as damaged by the last full read of :meth:`entries`.
        self.damaged = 0
        self._count: int | None = None  # intact entries, once counted (see RetryQueue._keys)

    def append(self, entry: DeadLetter) -> None:
        """Add one entry durably."""
        append_durable(self.path, seal(entry))
        if self._count is not None:
            self._count += 1

    def entries(self) -> Iterator[DeadLetter]:
        """The intact entries; damaged lines (a torn last line, a flipped byte) are skipped."""
        damaged = 0
        if self.path.exists():
            for line in read_lines(self.path):
                try:
                    yield DeadLetter.model_validate(unseal(line))
                except (ValueError, ValidationError):
                    damaged += 1
        self.damaged = damaged

    def __len__(self) -> int:
        """Intact entries (read from the file once, then counted in memory)."""
        if self._count is None:
            self._count = sum(1 for _ in self.entries())
        return self._count

    def keep_only(self, entries: list[DeadLetter]) -> None:
        """Rewrite the file with ``entries`` (atomically); only with the batch directory locked."""
        atomic_write(self.path, b"".join(seal(entry) + b"\n" for entry in entries))
        self._count = len(entries)


class RetryQueues:
    """The two retry queues and the dead letter of one batch directory."""

    def __init__(self, directory: Path) -> None:
        root = ensure_dir(directory / "queues")
        self.classify = RetryQueue(root / "classify", ClassifyRetry)
        self.store = RetryQueue(root / "store", StoreRetry)
        self.dead_letter = DeadLetterFile(directory / "dead_letter.jsonl")

    def sizes(self) -> dict[str, int]:
        """Entries per queue (``classify``, ``store``, ``dead``), known without a disk read."""
        return {
            "classify": len(self.classify),
            "store": len(self.store),
            "dead": len(self.dead_letter),
        }

    def store_documents(self) -> int:
        """Documents held by the store queue's readable entries, as they are on disk now."""
        total = 0
        for key in self.store.pending_keys():
            try:
                entry = self.store.get(key)
            except ValueError:
                continue
            total += len(entry.results) + len(entry.failures)
        return total

    def requeue_dead(self, selected: Callable[[DeadLetter], bool]) -> int:
        """Move the ``selected`` dead-letter entries back to their queue, attempts reset.

        The next run drains them first; a document stored then is marked done again. Returns
        how many entries moved. The caller holds the batch directory's lock.
        """
        keep, moved = [], 0
        for entry in self.dead_letter.entries():
            if not selected(entry):
                keep.append(entry)
                continue
            fresh = {"attempts": 1, "queued_at": utcnow()}
            if entry.queue == "classify":
                self.classify.add(ClassifyRetry.model_validate(entry.item).model_copy(update=fresh))
            else:
                self.store.add(StoreRetry.model_validate(entry.item).model_copy(update=fresh))
            moved += 1
        self.dead_letter.keep_only(keep)
        return moved

    def purge_dead(self, selected: Callable[[DeadLetter], bool]) -> int:
        """Delete the ``selected`` dead-letter entries (their documents stay failed)."""
        entries = list(self.dead_letter.entries())
        keep = [entry for entry in entries if not selected(entry)]
        self.dead_letter.keep_only(keep)
        return len(entries) - len(keep)

    def purge(
        self, queue: Literal["classify", "store"], selected: Callable[[str, Any], bool]
    ) -> int:
        """Delete the ``selected`` entries (by key and item) of a retry queue; how many.

        Their documents are given back: the worker's next start releases their claims and
        they are classified again.
        """
        retry_queue: RetryQueue[Any] = self.classify if queue == "classify" else self.store
        removed = 0
        for key in retry_queue.pending_keys():
            if selected(key, retry_queue.get(key)):
                retry_queue.remove(key)
                removed += 1
        return removed
