"""Slices sent to the provider's Batch API, on disk: what was claimed, sent and received.

Each slice is a directory under ``<batch_dir>/provider_batches/<slice id>/``:

- ``documents.jsonl``: the claimed documents, one checksummed line each (as in a batch file),
  written before anything is uploaded: the online route's fallback for any line, and the
  recovery's list of what the slice holds;
- ``requests.jsonl``: the request file uploaded as it is (``custom_id`` = source id and claim
  token), whose SHA-256 names it in the batch's metadata;
- ``state.json``: the slice's stage and the provider's ids (file, batch, output and error
  files), rewritten atomically at each step, so a restart knows what was done;
- ``output.jsonl`` and ``errors.jsonl``: the downloaded result files, kept until stored.

Stages, in order: ``claiming`` (the claim token recorded, documents being claimed),
``written`` (files on disk, nothing sent), ``uploaded`` (``file_id``),
``submitted`` (``batch_id``), ``downloaded`` (results on disk), ``stored`` (results in MongoDB;
only the provider's files remain to delete). A slice whose files are all deleted is removed.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from batch_processor.errors import ResourceError
from batch_processor.files.atomic import atomic_write, ensure_dir, read_lines
from batch_processor.files.batch_files import decode_doc_line, encode_doc_line
from batch_processor.models import SourceDocument, utcnow

DIRECTORY = "provider_batches"


class Stage(StrEnum):
    """How far a slice has come (see the module docstring)."""

    CLAIMING = "claiming"
    WRITTEN = "written"
    UPLOADED = "uploaded"
    SUBMITTED = "submitted"
    DOWNLOADED = "downloaded"
    STORED = "stored"


class SliceState(BaseModel):
    """The checkpoint of one slice: its stage, the provider's ids and what it produced."""

    slice_id: str
    job_id: str
    worker_id: str
    claim: str = Field(description="The claim token every document of the slice is held under.")
    stage: Stage = Stage.CLAIMING
    documents: int = 0
    requests: int = 0
    request_bytes: int = 0
    sha256: str = ""
    file_id: str | None = None
    batch_id: str | None = None
    batch_status: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    stored: int = 0
    online: int = 0
    failed: int = 0
    released: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ProviderSlice:
    """One slice's directory (see the module docstring)."""

    def __init__(self, directory: Path, state: SliceState) -> None:
        self.directory = directory
        self.state = state

    @property
    def requests_path(self) -> Path:
        """The request file to upload."""
        return self.directory / "requests.jsonl"

    @property
    def filename(self) -> str:
        """The name the request file is uploaded under (how an upload is found again)."""
        return f"{self.state.slice_id}.jsonl"

    def save(self, **changes: object) -> None:
        """Record ``changes`` to the state, atomically."""
        self.state = self.state.model_copy(update={**changes, "updated_at": utcnow()})
        atomic_write(self.directory / "state.json", self.state.model_dump_json(indent=2).encode())

    def documents(self) -> Iterator[SourceDocument]:
        """The slice's documents (a damaged line is skipped: its claim lapses, see recovery)."""
        for line in read_lines(self.directory / "documents.jsonl"):
            doc = decode_doc_line(line)
            if doc is not None:
                yield doc

    def keep_results(self, output: bytes, errors: bytes) -> None:
        """Keep the downloaded result files until they are stored."""
        atomic_write(self.directory / "output.jsonl", output)
        atomic_write(self.directory / "errors.jsonl", errors)

    def results(self) -> Iterator[bytes]:
        """The downloaded output lines, then the error lines."""
        for name in ("output.jsonl", "errors.jsonl"):
            path = self.directory / name
            if path.exists():
                yield from read_lines(path)

    def remove(self) -> None:
        """Delete the slice's directory (its work is done)."""
        try:
            shutil.rmtree(self.directory)
        except OSError as exc:
            raise ResourceError(f"cannot remove {self.directory}: {exc}") from exc


class ProviderSlices:
    """The slices of one batch directory."""

    def __init__(self, batch_dir: Path) -> None:
        self.directory = batch_dir / DIRECTORY

    def begin(self, state: SliceState) -> ProviderSlice:
        """A new slice, recorded before its documents are claimed (stage ``claiming``).

        So a crash while claiming leaves the claim token on disk, and the restart releases
        exactly those claims at once rather than when their long lease ends.
        """
        begun = ProviderSlice(ensure_dir(self.directory / state.slice_id), state)
        begun.save(stage=Stage.CLAIMING)
        return begun

    def write(
        self,
        begun: ProviderSlice,
        documents: Iterable[SourceDocument],
        requests: Iterable[bytes],
    ) -> None:
        """Write a claimed slice's documents and request file, then mark it ``written``."""
        directory = begun.directory
        atomic_write(
            directory / "documents.jsonl", b"".join(encode_doc_line(d) + b"\n" for d in documents)
        )
        lines = list(requests)
        body = b"".join(line + b"\n" for line in lines)
        atomic_write(directory / "requests.jsonl", body)
        begun.save(
            stage=Stage.WRITTEN,
            requests=len(lines),
            request_bytes=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
        )

    def load(self) -> tuple[list[ProviderSlice], list[Path]]:
        """The slices on disk, oldest first, and directories without a readable state.

        A directory without a state holds no claim (the state is written before claiming):
        it is only deleted.
        """
        slices: list[ProviderSlice] = []
        unreadable: list[Path] = []
        if not self.directory.is_dir():
            return slices, unreadable
        for directory in sorted(p for p in self.directory.iterdir() if p.is_dir()):
            try:
                state = SliceState.model_validate_json((directory / "state.json").read_bytes())
            except (OSError, ValidationError):
                unreadable.append(directory)
                continue
            slices.append(ProviderSlice(directory, state))
        return slices, unreadable

    def discard(self, directory: Path) -> None:
        """Delete a slice directory that holds no state (so no claim)."""
        try:
            shutil.rmtree(directory)
        except OSError as exc:
            raise ResourceError(f"cannot remove {directory}: {exc}") from exc

    def states(self) -> list[SliceState]:
        """Every slice's state (for ``status``)."""
        return [s.state for s in self.load()[0]]
