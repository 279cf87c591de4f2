"""Checkpoints: where a job is, written atomically, with the previous good one kept as backup.

The file holds the checkpoint and a SHA-256 of it, so truncation or corruption is detected
rather than half-read. :meth:`CheckpointStore.load` falls back to the backup when the current
file is bad and says which one it used; when both are bad it returns ``None`` and the caller
works from the database state and the batch files instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from .atomic import TEMP_SUFFIX, atomic_write, ensure_dir
from .errors import ResourceError
from .models import Checkpoint

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
        # Only a file known to be good may become the backup; a corrupt current file must
        # never overwrite a good backup.
        self._current_is_good = False

    def save(self, checkpoint: Checkpoint) -> None:
        """Write ``checkpoint``; the file it replaces becomes the backup if it was good."""
        body = json.loads(checkpoint.model_dump_json())
        payload = json.dumps({"sha256": _digest(body), "checkpoint": body}, indent=1)
        if self._current_is_good and self.path.exists():
            self._keep_backup()
        atomic_write(self.path, payload.encode())
        self._current_is_good = True

    def _keep_backup(self) -> None:
        """Make the current file the backup without ever leaving the current name empty.

        Renaming current to backup would open a window (between that rename and the new
        write) in which a crash leaves no ``checkpoint.json``; a hard link renamed over the
        backup keeps both names valid at every instant.
        """
        link = self.directory / f".{BACKUP_NAME}.{os.getpid()}{TEMP_SUFFIX}"
        try:
            link.unlink(missing_ok=True)
            os.link(self.path, link)
            link.replace(self.backup_path)
        except OSError as exc:
            link.unlink(missing_ok=True)
            raise ResourceError(f"cannot keep checkpoint backup: {exc}") from exc

    def load(self) -> LoadedCheckpoint:
        """The newest valid checkpoint: current, else backup, else none (with the problems)."""
        problems: list[str] = []
        for source, path in (("current", self.path), ("backup", self.backup_path)):
            if not path.exists():
                continue
            checkpoint, problem = _read(path)
            if checkpoint is not None:
                self._current_is_good = source == "current"
                return LoadedCheckpoint(checkpoint, source, tuple(problems))
            problems.append(problem)
        return LoadedCheckpoint(None, "none", tuple(problems))


def _digest(body: object) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _read(path: Path) -> tuple[Checkpoint | None, str]:
    """Parse and verify one checkpoint file; return it, or None and what is wrong."""
    try:
        envelope = json.loads(path.read_bytes())
        body = envelope["checkpoint"]
        if envelope.get("sha256") != _digest(body):
            return None, f"{path.name}: checksum mismatch (corrupt or edited)"
        return Checkpoint.model_validate(body), ""
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"{path.name}: unreadable ({reason})"
