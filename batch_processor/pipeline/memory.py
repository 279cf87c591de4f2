"""Memory you can see and bound: resident memory sampled at each page, page size adjusted.

Above ``max_rss_mb`` the worker halves the page it claims next (and the documents it admits
with it); below, it grows the page back by a tenth of ``batch_size`` per page: additive
increase, multiplicative decrease, as for a congestion window. The page shrinks down to one
document, so a worker over its limit still makes progress. Without a limit nothing is sampled
here (the per-batch log line samples RSS on its own).
"""

from __future__ import annotations

from collections.abc import Callable

import psutil
import structlog

from batch_processor.pipeline.control import Admission

log = structlog.get_logger("batch_processor.pipeline.memory")
_PROCESS = psutil.Process()


def rss_mb() -> float:
    """The resident memory of this process now, in MiB (about 25 µs)."""
    return float(_PROCESS.memory_info().rss) / (1024 * 1024)


class PageSizer:
    """The size of the next page: ``batch_size``, or less while RSS is above the limit."""

    def __init__(
        self,
        *,
        batch_size: int,
        max_rss_mb: float | None,
        admission: Admission,
        sample: Callable[[], float] = rss_mb,
    ) -> None:
        self._batch_size = batch_size
        self._max = max_rss_mb
        self._admission = admission
        self._full_limit = admission.limit
        self._sample = sample
        self.size = batch_size

    def next_size(self) -> int:
        """Sample RSS and return the size of the next page (adjusting the admission limit)."""
        if self._max is None:
            return self.size
        rss = self._sample()
        if rss > self._max:
            if self.size > 1:
                self.size = max(1, self.size // 2)
                log.warning(
                    "memory above max_rss_mb: claiming smaller pages",
                    rss_mb=round(rss, 1),
                    max_rss_mb=self._max,
                    page_size=self.size,
                )
        elif self.size < self._batch_size:
            self.size = min(self._batch_size, self.size + max(1, self._batch_size // 10))
        # Admit in proportion to the page: fewer documents held means fewer bytes held.
        share = self.size / self._batch_size
        self._admission.limit = max(self.size, round(self._full_limit * share))
        return self.size
