"""Cron schedules for scheduled mode: when the next run fires, and which firings were missed.

Pure decisions on timezone-aware datetimes (croniter does the cron arithmetic), so the runner's
loop only sleeps and runs. Five fields are standard cron; a sixth, last field gives seconds
(``"* * * * * */10"``: every ten seconds), which tests use to fire a few seconds ahead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from batch_processor.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron expression in a time zone."""

    expression: str
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str | None, timezone: str) -> CronSchedule:
        """Validate ``expression`` and ``timezone``; raise ConfigurationError naming the setting."""
        if not expression or not croniter.is_valid(expression):
            raise ConfigurationError(
                f"invalid setting cron (--cron / BATCH_CRON): {expression!r} is not a cron "
                "expression such as '*/15 * * * *' (scheduled mode needs one)"
            )
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"invalid setting timezone (--timezone / BATCH_TIMEZONE): unknown zone {timezone!r}"
            ) from None
        return cls(expression, zone)

    def next_after(self, moment: datetime) -> datetime:
        """The first firing strictly after ``moment``."""
        fire: datetime = croniter(self.expression, moment.astimezone(self.zone)).get_next(datetime)
        return fire

    def firings_between(self, start: datetime, end: datetime) -> int:
        """How many firings fall in ``(start, end]`` (those a long run made us skip)."""
        count, fire = 0, self.next_after(start)
        while fire <= end:
            count += 1
            fire = self.next_after(fire)
        return count
