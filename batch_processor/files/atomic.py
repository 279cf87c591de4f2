"""Crash-safe file primitives: atomic replace, durable append, and the start-up sweep.

A file written with :func:`atomic_write` is either its old content or its new content after any
crash (temp file, flush, fsync, ``os.replace``, fsync of the directory). A SIGKILL can leave the
temp file behind, so every start calls :func:`sweep_temp_files`. Disk errors (ENOSPC, EIO) are
raised as :class:`~batch_processor.errors.ResourceError` and leave the old file untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from batch_processor.errors import ConfigurationError, ResourceError

TEMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        with temp.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise ResourceError(f"cannot write {path}: {exc.strerror or exc}") from exc


def append_durable(path: Path, line: bytes) -> None:
    """Append one line to ``path`` and fsync it; a torn last line is skipped by readers."""
    try:
        with path.open("ab") as handle:
            handle.write(line.rstrip(b"\n") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise ResourceError(f"cannot append to {path}: {exc.strerror or exc}") from exc


def remove_durable(path: Path) -> None:
    """Delete ``path`` (if present) and make the deletion durable."""
    try:
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
    except OSError as exc:
        raise ResourceError(f"cannot remove {path}: {exc.strerror or exc}") from exc


def read_lines(path: Path) -> Iterator[bytes]:
    """The non-empty lines of ``path``, without their line ends."""
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if line:
                yield line


def sweep_temp_files(root: Path) -> list[Path]:
    """Delete temp files a crash left below ``root``; return what was removed.

    A temp file names the process writing it; this process's own are writes in progress
    (the Batch API route writes in a thread while a job starts), not a crash's leftovers.
    """
    removed = []
    mine = f".{os.getpid()}."
    for temp in root.rglob(f".*{TEMP_SUFFIX}"):
        if mine in temp.name:
            continue
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
            removed.append(temp)
    return removed


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if missing; raise ResourceError if that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResourceError(f"cannot create directory {path}: {exc.strerror or exc}") from exc
    return path


def writable_dir(path: Path, setting: str) -> Path:
    """``path``, created if missing, after checking a file can be written in it.

    A directory the daemon cannot write is a setup problem: ConfigurationError naming the
    setting (checked by writing, since permission bits do not tell for root or read-only mounts).
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe.{os.getpid()}{TEMP_SUFFIX}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigurationError(
            f"invalid setting {setting}: {path} is not writable ({exc.strerror or exc})"
        ) from None
    return path


@dataclass(frozen=True, slots=True)
class LockHolder:
    """The process that took a batch directory's lock last, and whether it still runs."""

    pid: int
    alive: bool


def lock_holder(path: Path) -> LockHolder | None:
    """Who holds (or last held) the lock at ``path``; None if no process ever took it.

    Alive means a process with that pid runs and started when the holder did (a pid reused
    by another process after a crash is not mistaken for the holder).
    """
    try:
        pid_text, started_text = path.read_text().split()
        pid, started = int(pid_text), float(started_text)
    except (OSError, ValueError):
        return None
    return LockHolder(pid, abs(_started(pid) - started) < 1.0)


def _started(pid: int) -> float:
    """A token of when process ``pid`` started, or -1 when it does not exist.

    On Linux: its start time in clock ticks since boot, from ``/proc/PID/stat``, which a unit
    hardened with ``ProcSubset=pid`` still shows (psutil's ``create_time`` also needs
    ``/proc/stat`` for the boot time: under that hardening it failed, and ``status`` called a
    live worker dead). Elsewhere: psutil's creation time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # Fields after the command name (which may hold spaces and parentheses): the 22nd
        # field of the line, starttime, is the 20th after it.
        return float(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        pass
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return -1.0


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a batch directory's lock file) or refuse at once.

    Two processes sharing one batch directory would take each other's batch files and claims
    for a crashed job's; the lock makes that impossible. The OS drops it when the process dies.
    """
    try:
        handle = path.open("a+")
    except OSError as exc:
        raise ConfigurationError(
            f"invalid setting batch_dir: {path.parent} is not writable ({exc.strerror or exc})"
        ) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(
                f"batch directory {path.parent} is in use by another batch-processor process; "
                "give each worker its own --batch-dir"
            ) from None
        # Who holds it, for ``status`` (which must never take the lock itself: a worker
        # starting at that moment would be refused).
        handle.truncate(0)
        handle.write(f"{os.getpid()} {_started(os.getpid())}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)  # released: no process holds the directory now
    finally:
        handle.close()
