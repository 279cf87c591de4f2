"""Retry queues and the dead letter, on disk.

A queue is a directory with one atomically written JSON file per entry, so adding, updating and
removing an entry are each one crash-safe file operation and no queue file is ever rewritten as
a whole. The ``classify`` queue holds documents whose classification failed after its retries;
the ``store`` queue holds computed results MongoDB did not take, so none is lost during an
outage. The dead letter is an append-only JSON Lines file of items that failed past the limit.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from .atomic import append_durable, atomic_write, ensure_dir, read_lines, remove_durable
from .models import ClassifyRetry, DeadLetter, StoreRetry, utcnow

SUFFIX = ".json"

Item = TypeVar("Item", bound=BaseModel)


class RetryQueue(Generic[Item]):
    """A directory of retry entries of one model type, oldest first."""

    def __init__(self, directory: Path, model: type[Item]) -> None:
        self.directory = ensure_dir(directory)
        self.model = model
        self.name = directory.name

    def add(self, item: Item) -> str:
        """Persist a new entry and return its key."""
        key = f"{utcnow():%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"
        self.replace(key, item)
        return key

    def replace(self, key: str, item: Item) -> None:
        """Overwrite an entry (after another failed attempt)."""
        atomic_write(self.directory / f"{key}{SUFFIX}", item.model_dump_json().encode())

    def remove(self, key: str) -> None:
        """Delete an entry that has ended."""
        remove_durable(self.directory / f"{key}{SUFFIX}")

    def pending_keys(self) -> list[str]:
        """Keys of the entries present, oldest first."""
        return sorted(path.stem for path in self.directory.glob(f"*{SUFFIX}"))

    def __len__(self) -> int:
        return len(self.pending_keys())

    def get(self, key: str) -> Item:
        """Read one entry; raise ValueError if it is unreadable."""
        try:
            return self.model.model_validate_json((self.directory / f"{key}{SUFFIX}").read_bytes())
        except (OSError, ValidationError) as exc:
            raise ValueError(f"retry entry {self.name}/{key} is unreadable: {exc}") from exc

    def set_aside(self, key: str) -> Path:
        """Rename an unreadable entry so that it is kept for a person and not read again."""
        path = self.directory / f"{key}{SUFFIX}"
        target = path.with_name(path.name + ".corrupt")
        path.replace(target)
        return target


class DeadLetterFile:
    """The append-only file of items that failed past their retry limit."""

    def __init__(self, path: Path) -> None:
        ensure_dir(path.parent)
        self.path = path

    def append(self, entry: DeadLetter) -> None:
        """Add one entry durably."""
        append_durable(self.path, entry.model_dump_json().encode())

    def entries(self) -> Iterator[DeadLetter]:
        """The readable entries; a torn last line from a crash is skipped."""
        if not self.path.exists():
            return
        for line in read_lines(self.path):
            try:
                yield DeadLetter.model_validate(json.loads(line))
            except (ValueError, ValidationError):
                continue

    def __len__(self) -> int:
        return sum(1 for _ in self.entries())

    def keep_only(self, entries: list[DeadLetter]) -> None:
        """Rewrite the file with ``entries`` (atomically); only with the batch directory locked."""
        atomic_write(self.path, b"".join(e.model_dump_json().encode() + b"\n" for e in entries))


class RetryQueues:
    """The two retry queues and the dead letter of one batch directory."""

    def __init__(self, directory: Path) -> None:
        root = ensure_dir(directory / "queues")
        self.classify = RetryQueue(root / "classify", ClassifyRetry)
        self.store = RetryQueue(root / "store", StoreRetry)
        self.dead_letter = DeadLetterFile(directory / "dead_letter.jsonl")
