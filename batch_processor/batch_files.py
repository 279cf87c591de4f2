"""Batch files: every claimed page is saved locally before any of it is classified.

A batch file is JSON Lines: a header line, then one :class:`SourceDocument` per line. It is
written atomically and deleted once every document in it has ended (stored, failed, or safely in
a retry queue), so the files present at start-up are exactly the unfinished work of a crashed
job, and ``--recover`` can finish them even while MongoDB is unreachable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from .atomic import atomic_write, ensure_dir, read_lines, remove_durable
from .models import SourceDocument, utcnow

SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class BatchFile:
    """The contents of one batch file."""

    name: str
    job_id: str
    docs: list[SourceDocument]


class CorruptBatchFileError(Exception):
    """A batch file could not be read back; it is set aside, not deleted."""


class BatchFiles:
    """The directory of batch files of one batch directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = ensure_dir(directory)

    def save(self, job_id: str, sequence: int, docs: list[SourceDocument]) -> str:
        """Write one batch atomically and return its name."""
        name = f"{job_id}-{sequence:06d}{SUFFIX}"
        header = {"batch": name, "job_id": job_id, "count": len(docs), "saved_at": str(utcnow())}
        lines = [json.dumps(header).encode()]
        lines.extend(doc.model_dump_json().encode() for doc in docs)
        atomic_write(self.directory / name, b"\n".join(lines) + b"\n")
        return name

    def load(self, name: str) -> BatchFile:
        """Read a batch file back; raise CorruptBatchFileError if it does not parse."""
        path = self.directory / name
        try:
            lines = list(read_lines(path))
            header = json.loads(lines[0])
            docs = [SourceDocument.model_validate_json(line) for line in lines[1:]]
        except (OSError, IndexError, ValueError, ValidationError) as exc:
            raise CorruptBatchFileError(f"batch file {name} is unreadable: {exc}") from exc
        if header.get("count") != len(docs):
            raise CorruptBatchFileError(
                f"batch file {name} holds {len(docs)} documents, its header says "
                f"{header.get('count')}"
            )
        return BatchFile(name=name, job_id=str(header.get("job_id", "")), docs=docs)

    def names(self) -> list[str]:
        """The batch files present, oldest first."""
        return sorted(path.name for path in self.directory.glob(f"*{SUFFIX}"))

    def delete(self, name: str) -> None:
        """Remove a finished batch file."""
        remove_durable(self.directory / name)

    def set_aside(self, name: str) -> Path:
        """Rename an unreadable batch file so that it is kept for a person to look at."""
        path = self.directory / name
        target = path.with_name(path.name + ".corrupt")
        path.replace(target)
        return target
