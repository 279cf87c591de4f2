"""Checkpoints: where a job is, written atomically, with the previous good one kept as backup.

The file holds the checkpoint and a SHA-256 of it, so truncation or corruption is detected
rather than half-read. :meth:`CheckpointStore.load` falls back to the backup when the current
file is bad and says which one it used; when both are bad it returns ``None`` and the caller
works from the database state and the batch files instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from batch_processor.files.atomic import atomic_write, ensure_dir
from batch_processor.models import Checkpoint

FILE_NAME = "checkpoint.json"
BACKUP_NAME = "checkpoint.json.bak"


@dataclass(frozen=True, slots=True)
class LoadedCheckpoint:
    """A checkpoint read back, with where it came from and what was wrong on the way."""

    checkpoint: Checkpoint | None
    source: str  # "current", "backup" or "none"
    problems: tuple[str, ...] = ()


class CheckpointStore:
    """The checkpoint file and its backup in one batch directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = ensure_dir(directory)
        self.path = directory / FILE_NAME
        self.backup_path = directory / BACKUP_NAME
        # The bytes of the current file when they are known to be good (written by us, or
        # loaded and verified): only those may become the backup, never a corrupt file.
        self._good_current: bytes | None = None

    def save(self, checkpoint: Checkpoint) -> None:
        """Write ``checkpoint``; the checkpoint it replaces becomes the backup if it was good.

        The backup is written from the good bytes kept in memory, as its own file: renaming the
        current file to the backup would leave no ``checkpoint.json`` until the new one is in
        place, and a hard link would make both names one file, corrupted together.
        """
        body = json.loads(checkpoint.model_dump_json())
        payload = json.dumps({"sha256": _digest(body), "checkpoint": body}, indent=1).encode()
        if self._good_current is not None:
            atomic_write(self.backup_path, self._good_current)
        atomic_write(self.path, payload)
        self._good_current = payload

    def load(self) -> LoadedCheckpoint:
        """The newest valid checkpoint: current, else backup, else none (with the problems)."""
        problems: list[str] = []
        for source, path in (("current", self.path), ("backup", self.backup_path)):
            if not path.exists():
                continue
            try:
                raw = path.read_bytes()
            except OSError as exc:
                problems.append(f"{path.name}: unreadable ({exc.strerror or exc})")
                continue
            checkpoint, problem = _parse(raw, path.name)
            if checkpoint is not None:
                # Keep the very bytes that were verified, to become the backup at the next save.
                self._good_current = raw if source == "current" else None
                return LoadedCheckpoint(checkpoint, source, tuple(problems))
            problems.append(problem)
        return LoadedCheckpoint(None, "none", tuple(problems))


def _digest(body: object) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _parse(raw: bytes, name: str) -> tuple[Checkpoint | None, str]:
    """Parse and verify one checkpoint file's bytes; return it, or None and what is wrong."""
    try:
        envelope = json.loads(raw)
        body = envelope["checkpoint"]
        if envelope.get("sha256") != _digest(body):
            return None, f"{name}: checksum mismatch (corrupt or edited)"
        return Checkpoint.model_validate(body), ""
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"{name}: unreadable ({reason})"
