"""The embedded MongoDB-compatible server: SecantusDB, started as a separate process.

Used when no MongoDB URI is configured, so the product runs on a fresh machine with nothing
else installed. SecantusDB is GPL-2.0 and is never imported here: it is found with
``importlib.util.find_spec`` and run as ``python -m secantus`` in its own process, which dies
with its parent (``PR_SET_PDEATHSIG``). It runs in a session of its own: a Ctrl-C at the
terminal reaches the daemon alone, which stores what it can and then stops the server (in the
daemon's process group, the server died first and the daemon waited for it). Its data lives
under the batch directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import structlog

from batch_processor.errors import ConfigurationError, TransientError
from batch_processor.files.atomic import ensure_dir

MODULE = "secantus"
#: Beside the data while the server runs: its address, for the commands that cannot start
#: their own server on data a running worker holds.
ADDRESS_FILE = "address"
PR_SET_PDEATHSIG = 1
START_TIMEOUT = 30.0
#: How long a start waits for another command's server (``status``, ``report``: a few
#: seconds each) to let go of the same data directory.
BUSY_WAIT = 20.0
#: What the server logs when another server has the data directory open.
_BUSY = "resource busy"

log = structlog.get_logger("batch_processor.runtime.embedded")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_available() -> bool:
    """Whether SecantusDB is installed (without importing it)."""
    return importlib.util.find_spec(MODULE) is not None


class EmbeddedServer:
    """One SecantusDB server process with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, *, port: int = 0) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The connection string of the running server."""
        return uri_of(f"127.0.0.1:{self.port}")

    async def start(self) -> str:
        """Start the server and wait until it accepts connections; return its URI."""
        if not is_available():
            raise ConfigurationError(
                "no MongoDB URI is configured (--mongodb-uri / BATCH_PROCESSOR_MONGODB_URI) and "
                "the embedded server is not installed: pip install 'batch-processor[embedded]'"
            )
        ensure_dir(self.data_dir)
        config = self.data_dir / "secantusd.toml"
        config.touch()  # an empty config: never pick up ./secantusd.toml or /etc/secantus
        fixed_port = self.port != 0
        clashes, waited = 0, False
        busy_until = time.monotonic() + BUSY_WAIT
        while True:
            if not fixed_port:
                self.port = free_port()
            logged = self._log_size()
            self.process = self._spawn(config)
            if await self._wait_ready():
                (self.data_dir / ADDRESS_FILE).write_text(f"127.0.0.1:{self.port}\n")
                return self.uri
            if _BUSY in self._log_since(logged) and time.monotonic() < busy_until:
                # Another command's server (a status, a report) has the data open: it ends
                # within seconds. Without the wait a worker started beside it failed.
                if not waited:
                    log.info("the embedded server's data is in use by another command: waiting")
                waited = True
                await asyncio.sleep(0.5)
                continue
            clashes += 1
            if fixed_port or clashes >= 5:
                break
        raise TransientError(f"the embedded server did not start: {self._log_tail()}")

    def _log_size(self) -> int:
        try:
            return (self.data_dir / "server.log").stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        """What the server logged after ``offset``: why the last start ended."""
        try:
            with (self.data_dir / "server.log").open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def _spawn(self, config: Path) -> subprocess.Popen[bytes]:
        log = (self.data_dir / "server.log").open("ab")
        command = [
            sys.executable,
            "-m",
            MODULE,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(self.data_dir / "data"),
            "--log-level",
            "WARNING",
            "--config",
            str(config),
        ]
        try:
            return subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                start_new_session=True,  # not in the terminal's process group: see above
                cwd=self.data_dir,
            )
        finally:
            log.close()

    async def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False  # a port clash exits at once; the caller picks another port
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return True
            await asyncio.sleep(0.05)
        await self.stop()
        return False

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        process, self.process = self.process, None
        with contextlib.suppress(OSError):
            (self.data_dir / ADDRESS_FILE).unlink(missing_ok=True)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        for _ in range(200):
            if process.poll() is not None:
                return
            await asyncio.sleep(0.05)
        process.kill()
        process.wait()

    def _log_tail(self) -> str:
        log = self.data_dir / "server.log"
        lines = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
        return " | ".join(lines) or "no output"


def uri_of(address: str) -> str:
    """The connection string of an embedded server at ``address`` (``host:port``)."""
    return f"mongodb://{address}/?directConnection=true"


def running_address(data_dir: Path) -> str | None:
    """The address a running embedded server on ``data_dir`` listens on, if it said."""
    try:
        return (data_dir / ADDRESS_FILE).read_text().strip() or None
    except OSError:
        return None
