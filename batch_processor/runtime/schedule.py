"""Cron schedules for scheduled mode: when the next run fires, and which firings were missed.

Pure decisions on timezone-aware datetimes (croniter does the cron arithmetic), so the runner's
loop only sleeps and runs.

Only unambiguous expressions are accepted: five fields (minute hour day-of-month month
day-of-week) or a macro such as ``@hourly``. A six-field expression means different things to
different tools (Quartz and Spring put seconds first, croniter last: ``*/10 * * * * *`` is
every ten seconds to one and every ten minutes to the other), so it is refused with a message
that says so; runs more often than once a minute are continuous mode's job (``--interval``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from batch_processor.errors import ConfigurationError

FIELD_NAMES = ("minute", "hour", "day_of_month", "month", "day_of_week")


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron expression in a time zone."""

    expression: str
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str | None, timezone: str) -> CronSchedule:
        """Validate ``expression`` and ``timezone``; raise ConfigurationError naming the setting."""
        setting = "invalid setting cron (--cron / BATCH_PROCESSOR_CRON)"
        fields = (expression or "").split()
        if len(fields) == 6:
            raise ConfigurationError(
                f"{setting}: {expression!r} has six fields, which tools read differently "
                "(Quartz and Spring: seconds first; croniter: seconds last). Use five fields: "
                "minute hour day-of-month month day-of-week, e.g. '*/15 * * * *'; for runs "
                "more often than a minute, use --mode continuous --interval SECONDS"
            )
        macro = len(fields) == 1 and fields[0].startswith("@")
        if not expression or not (len(fields) == 5 or macro) or not croniter.is_valid(expression):
            raise ConfigurationError(
                f"{setting}: {expression!r} is not a five-field cron expression (minute hour "
                "day-of-month month day-of-week) such as '*/15 * * * *' (scheduled mode needs one)"
            )
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"invalid setting timezone (--timezone / BATCH_PROCESSOR_TIMEZONE): "
                f"unknown zone {timezone!r}"
            ) from None
        return cls(expression, zone)

    @property
    def meaning(self) -> str:
        """The expression with each field named, for the log (``minute=*/15 hour=* ...``)."""
        fields = self.expression.split()
        if len(fields) != len(FIELD_NAMES):
            return self.expression
        return " ".join(f"{name}={value}" for name, value in zip(FIELD_NAMES, fields, strict=True))

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
