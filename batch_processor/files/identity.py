"""The worker's identity: a stable id kept in its batch directory, checked like every state file.

Claims carry the worker id, so a restarted worker recognises its own claims from any earlier
crashed job. The id is kept twice (``worker_id`` and ``worker_id.bak``), each with a SHA-256,
so a damaged file is *detected* and named in the log instead of silently giving the worker a
new identity. Should both copies be damaged, the id recorded in the last checkpoint is used;
only when nothing remembers it is a new id made (and the batch files' claim tokens still let
the recovery take back what the old id claimed).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
from pathlib import Path

import structlog

from batch_processor.files.atomic import atomic_write

FILE_NAME = "worker_id"
BACKUP_NAME = "worker_id.bak"
_LEGACY = re.compile(r"^[A-Za-z0-9._-]{1,200}-[0-9a-f]{8}$")

log = structlog.get_logger("batch_processor.files.identity")


def _digest(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()


def encode_identity(identity: str) -> bytes:
    """The file content for ``identity``: the id and its checksum."""
    return json.dumps({"worker_id": identity, "sha256": _digest(identity)}).encode()


def decode_identity(raw: bytes) -> str | None:
    """The id in a worker-id file, or None if the file is damaged."""
    try:
        data = json.loads(raw)
    except ValueError:
        # Files written before checksums held the bare id: accept only that exact shape.
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            return None
        return text if _LEGACY.fullmatch(text) else None
    if not isinstance(data, dict):
        return None
    identity = data.get("worker_id")
    if not isinstance(identity, str) or data.get("sha256") != _digest(identity):
        return None
    return identity


def new_identity() -> str:
    """A fresh worker id: the host name and random hex."""
    return f"{socket.gethostname()}-{secrets.token_hex(4)}"


def worker_identity(directory: Path, *, fallback: str | None = None) -> str:
    """The stable id of the worker that owns ``directory`` (created on first use).

    ``fallback`` is the id the last checkpoint recorded, used if both files are damaged.
    """
    found: str | None = None
    damaged: list[str] = []
    for name in (FILE_NAME, BACKUP_NAME):
        path = directory / name
        if not path.exists():
            continue
        try:
            found = decode_identity(path.read_bytes())
        except OSError:
            found = None
        if found is not None:
            break
        damaged.append(str(path))
    if damaged:
        log.error(
            "worker id file damaged",
            files=damaged,
            using="the backup" if found else ("the checkpoint's" if fallback else "a new id"),
        )
    identity = found or fallback or new_identity()
    if found is None or damaged or not (directory / BACKUP_NAME).exists():
        content = encode_identity(identity)
        atomic_write(directory / FILE_NAME, content)
        atomic_write(directory / BACKUP_NAME, content)
    return identity
