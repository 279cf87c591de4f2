"""Results kept beside their batch file until stored, so a crash does not pay for them twice.

A result that cost an LLM request is appended to ``<batch file>.results`` as soon as it is
handed to the writer (one checksummed JSON line, no fsync: a killed process's writes are in the
page cache, and a power cut only costs asking again). The recovery of a batch file stores the
results its journal holds instead of asking the LLM again; the journal is deleted with its batch
file. A damaged line is skipped (its document is classified again).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from batch_processor.errors import ResourceError
from batch_processor.files.atomic import read_lines
from batch_processor.models import ClassifiedDocument

SUFFIX = ".results"
_PREFIX = b'{"sha256":"'
_MIDDLE = b'","result":'


class ResultJournal:
    """The result journals of one directory of batch files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._open: dict[str, IO[bytes]] = {}

    def append(self, batch: str, result: ClassifiedDocument) -> None:
        """Keep ``result`` beside batch file ``batch`` (until the batch file is deleted)."""
        body = result.model_dump_json().encode()
        line = _PREFIX + hashlib.sha256(body).hexdigest().encode() + _MIDDLE + body + b"}\n"
        try:
            handle = self._open.get(batch)
            if handle is None:
                handle = self._open[batch] = (self.directory / f"{batch}{SUFFIX}").open("ab")
            handle.write(line)
            handle.flush()
        except OSError as exc:
            raise ResourceError(f"cannot write the result journal of {batch}: {exc}") from exc

    def load(self, batch: str) -> dict[str, ClassifiedDocument]:
        """The results kept for batch file ``batch``, by document id (damaged lines skipped)."""
        path = self.directory / f"{batch}{SUFFIX}"
        if not path.exists():
            return {}
        found: dict[str, ClassifiedDocument] = {}
        start = len(_PREFIX) + 64 + len(_MIDDLE)
        for line in read_lines(path):
            digest, body = line[len(_PREFIX) : len(_PREFIX) + 64], line[start:-1]
            if not line.startswith(_PREFIX) or hashlib.sha256(body).hexdigest().encode() != digest:
                continue  # damaged (a torn last line, a flipped byte)
            try:
                result = ClassifiedDocument.model_validate_json(body)
            except ValidationError:
                continue
            found[result.doc_id] = result
        return found

    def discard(self, batch: str) -> None:
        """Delete the journal of batch file ``batch`` (its documents have all ended)."""
        handle = self._open.pop(batch, None)
        if handle is not None:
            handle.close()
        (self.directory / f"{batch}{SUFFIX}").unlink(missing_ok=True)
