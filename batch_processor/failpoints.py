"""Named crash points for the fault tests: the process kills itself (SIGKILL) at one of them.

``BATCH_PROCESSOR_FAILPOINTS=after_upload`` (a comma-separated list) makes :func:`crash_at`
end the process with SIGKILL when it reaches that point, exactly as a power cut or the OOM
killer would: no ``finally``, no flush. The tests of the Batch API route use it to stop a
worker after each step of a provider batch's lifecycle, which a kill from outside could only
hit by chance. Unset (as in production) it costs one set lookup per point.
"""

from __future__ import annotations

import os
import signal

#: Read once, at import: the points armed for this process.
ARMED = frozenset(filter(None, os.environ.get("BATCH_PROCESSOR_FAILPOINTS", "").split(",")))


def crash_at(point: str) -> None:
    """SIGKILL this process if ``point`` is armed."""
    if point in ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
