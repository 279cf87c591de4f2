"""The Batch API route's files on this worker's disk: a cache, never the only record.

A slice's record lives in MongoDB (:mod:`batch_processor.slice_record`); on disk, under
``<batch_dir>/provider_batches/<slice id>/``, are only what is cheaper to keep than to make
again:

- ``requests.jsonl``: the request file, built from the claimed documents, kept until it is
  uploaded (a worker without it builds it again from the documents in MongoDB);
- ``output.jsonl`` and ``errors.jsonl``: the downloaded result files, kept until stored (a
  worker without them downloads them again).

Directories of slices that are finished, or that this worker no longer owns, are removed.
Earlier versions kept the slice's state here too (``state.json``): :meth:`legacy_states`
reads it once, so the route records it in MongoDB.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from batch_processor.errors import ResourceError
from batch_processor.files.atomic import atomic_write, ensure_dir, read_lines

DIRECTORY = "provider_batches"


class SliceFiles:
    """The cached files of the slices of one batch directory."""

    def __init__(self, batch_dir: Path) -> None:
        self.directory = batch_dir / DIRECTORY

    def requests_path(self, slice_id: str) -> Path:
        """The request file of ``slice_id``."""
        return self.directory / slice_id / "requests.jsonl"

    def write_requests(self, slice_id: str, lines: Iterable[bytes]) -> tuple[int, str]:
        """Write the request file atomically; its size and SHA-256."""
        body = b"".join(line + b"\n" for line in lines)
        ensure_dir(self.directory / slice_id)
        atomic_write(self.requests_path(slice_id), body)
        return len(body), hashlib.sha256(body).hexdigest()

    def has_requests(self, slice_id: str, sha256: str) -> bool:
        """Whether the request file is here, whole (its SHA-256 as recorded)."""
        path = self.requests_path(slice_id)
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
        except OSError:
            return False

    def keep_results(self, slice_id: str, output: bytes, errors: bytes) -> None:
        """Keep the downloaded result files until they are stored."""
        directory = ensure_dir(self.directory / slice_id)
        atomic_write(directory / "output.jsonl", output)
        atomic_write(directory / "errors.jsonl", errors)

    def has_results(self, slice_id: str) -> bool:
        """Whether both result files are here."""
        directory = self.directory / slice_id
        return (directory / "output.jsonl").exists() and (directory / "errors.jsonl").exists()

    def results(self, slice_id: str) -> Iterator[bytes]:
        """The downloaded output lines, then the error lines (a damaged line is skipped)."""
        for name in ("output.jsonl", "errors.jsonl"):
            path = self.directory / slice_id / name
            if path.exists():
                yield from read_lines(path)

    def remove(self, slice_id: str) -> None:
        """Delete a slice's files (its work is done, or another worker has it)."""
        directory = self.directory / slice_id
        try:
            shutil.rmtree(directory, ignore_errors=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ResourceError(f"cannot remove {directory}: {exc}") from exc

    def cached(self) -> list[str]:
        """The slice ids with a directory here."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir())

    def legacy_states(self) -> list[dict[str, Any]]:
        """The ``state.json`` of slices written by an earlier version (see the module docstring)."""
        states = []
        for slice_id in self.cached():
            path = self.directory / slice_id / "state.json"
            try:
                state = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(state, dict):
                states.append(state)
        return states

    def forget_legacy_state(self, slice_id: str) -> None:
        """Remove a ``state.json`` once it is recorded in MongoDB."""
        (self.directory / slice_id / "state.json").unlink(missing_ok=True)
