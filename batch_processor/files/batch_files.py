"""Batch files: every claimed page is saved locally before any of it is classified.

A batch file is JSON Lines: a header line, then one :class:`SourceDocument` per line. It is
written atomically and deleted once every document in it has ended (stored, failed, or safely in
a retry queue), so the files present at start-up are exactly the unfinished work of a crashed
job, and ``--recover`` can finish them even while MongoDB is unreachable.

Every line carries a SHA-256 of its content (format 2), so a flipped byte or a truncated file
is *detected*: a damaged line is never read as a changed text or lost metadata. Its document is
left out of the recovery (the file is copied aside for a person), and because it is still
claimed under the claim token the header recorded, the recovery releases it and the document is
read again from MongoDB. Format-1 files (no checksums) are still read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from batch_processor.errors import ResourceError
from batch_processor.files.atomic import atomic_write, ensure_dir, read_lines, remove_durable
from batch_processor.files.journal import ResultJournal
from batch_processor.models import SourceDocument, utcnow

SUFFIX = ".jsonl"
FORMAT = 2
_DOC_PREFIX = b'{"sha256":"'
_DOC_MIDDLE = b'","doc":'


@dataclass(frozen=True, slots=True)
class BatchFile:
    """The readable contents of one batch file, and how many lines were damaged."""

    name: str
    job_id: str
    docs: list[SourceDocument]
    claim: str | None = None
    damaged: int = 0


class CorruptBatchFileError(Exception):
    """A batch file could not be read back at all; it is set aside, not deleted."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_doc_line(doc: SourceDocument) -> bytes:
    """One document line: its JSON with the SHA-256 of exactly those bytes."""
    body = doc.model_dump_json().encode()
    return _DOC_PREFIX + _digest(body).encode() + _DOC_MIDDLE + body + b"}"


def decode_doc_line(line: bytes) -> SourceDocument | None:
    """The document of a format-2 line, or None if the line is damaged."""
    head = len(_DOC_PREFIX) + 64
    if not (line.startswith(_DOC_PREFIX) and line.endswith(b"}")):
        return None
    if line[head : head + len(_DOC_MIDDLE)] != _DOC_MIDDLE:
        return None
    body = line[head + len(_DOC_MIDDLE) : -1]
    if _digest(body).encode() != line[len(_DOC_PREFIX) : head]:
        return None
    try:
        return SourceDocument.model_validate_json(body)
    except ValidationError:
        return None


def _encode_header(header: dict[str, Any]) -> bytes:
    body = json.dumps(header, sort_keys=True)
    return json.dumps({"sha256": _digest(body.encode()), "header": header}, sort_keys=True).encode()


def _decode_header(line: bytes) -> dict[str, Any] | None:
    """The header of a format-2 file, a format-1 header as it is, or None if damaged."""
    try:
        envelope = json.loads(line)
    except ValueError:
        return None
    if not isinstance(envelope, dict):
        return None
    if "header" not in envelope:  # format 1: no checksum to verify
        return envelope if "batch" in envelope else None
    header = envelope["header"]
    body = json.dumps(header, sort_keys=True).encode()
    if not isinstance(header, dict) or envelope.get("sha256") != _digest(body):
        return None
    return header


class BatchFiles:
    """The directory of batch files of one batch directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = ensure_dir(directory)
        self.journal = ResultJournal(self.directory)

    async def save(
        self, job_id: str, sequence: int, docs: list[SourceDocument], *, claim: str | None = None
    ) -> str:
        """Write one batch atomically (off the event loop) and return its name."""
        name = f"{job_id}-{sequence:06d}{SUFFIX}"
        await asyncio.to_thread(self._write, name, job_id, docs, claim)
        return name

    def _write(self, name: str, job_id: str, docs: list[SourceDocument], claim: str | None) -> None:
        header = {
            "format": FORMAT,
            "batch": name,
            "job_id": job_id,
            "claim": claim,
            "count": len(docs),
            "saved_at": str(utcnow()),
        }
        lines = [_encode_header(header), *map(encode_doc_line, docs)]
        atomic_write(self.directory / name, b"\n".join(lines) + b"\n")

    def load(self, name: str) -> BatchFile:
        """Read a batch file back; raise CorruptBatchFileError if nothing of it is usable."""
        path = self.directory / name
        try:
            lines = list(read_lines(path))
        except OSError as exc:
            raise CorruptBatchFileError(f"batch file {name} is unreadable: {exc}") from exc
        if not lines:
            raise CorruptBatchFileError(f"batch file {name} is empty")
        header = _decode_header(lines[0])
        if header is not None and header.get("format") != FORMAT:
            return self._load_format_1(name, header, lines[1:])
        docs = [doc for doc in map(decode_doc_line, lines[1:]) if doc is not None]
        expected = header.get("count") if header is not None else None
        damaged = (len(lines) - 1 - len(docs)) + (header is None)
        if isinstance(expected, int) and expected > len(docs):
            damaged = max(damaged, expected - len(docs))
        if header is None and not docs:
            raise CorruptBatchFileError(f"batch file {name} has no readable line")
        claim = header.get("claim") if header is not None else None
        return BatchFile(
            name=name,
            job_id=str(header.get("job_id", "")) if header is not None else "",
            docs=docs,
            claim=claim if isinstance(claim, str) else None,
            damaged=damaged,
        )

    @staticmethod
    def _load_format_1(name: str, header: dict[str, Any], lines: list[bytes]) -> BatchFile:
        try:
            docs = [SourceDocument.model_validate_json(line) for line in lines]
        except (ValueError, ValidationError) as exc:
            raise CorruptBatchFileError(f"batch file {name} is unreadable: {exc}") from exc
        if header.get("count") != len(docs):
            raise CorruptBatchFileError(
                f"batch file {name} holds {len(docs)} documents, its header says "
                f"{header.get('count')}"
            )
        return BatchFile(name=name, job_id=str(header.get("job_id", "")), docs=docs)

    def count_documents(self) -> int:
        """Documents in the batch files present (unreadable files count as none; never raises)."""
        total = 0
        for name in self.names():
            try:
                total += len(self.load(name).docs)
            except (CorruptBatchFileError, OSError):
                continue
        return total

    def names(self) -> list[str]:
        """The batch files present, oldest first."""
        return sorted(path.name for path in self.directory.glob(f"*{SUFFIX}"))

    def delete(self, name: str) -> None:
        """Remove a finished batch file, and its result journal."""
        remove_durable(self.directory / name)
        self.journal.discard(name)

    def set_aside(self, name: str) -> Path:
        """Rename an unreadable batch file so that it is kept for a person to look at."""
        path = self.directory / name
        target = path.with_name(path.name + ".corrupt")
        path.replace(target)
        return target

    def keep_copy(self, name: str) -> Path:
        """Copy a damaged batch file aside for a person; the original is still used."""
        path = self.directory / name
        target = path.with_name(path.name + ".damaged")
        try:
            shutil.copyfile(path, target)
        except OSError as exc:
            raise ResourceError(f"cannot copy {path}: {exc.strerror or exc}") from exc
        return target
