"""Document priorities: high, normal and low (seed 004's 9 / 5 / 1), read from one source field.

The field (``priority_field``, default ``priority``) may hold ``9``/``5``/``1`` or
``high``/``normal``/``low`` (any case). Anything else, a missing field and ``null`` mean normal;
a value that is present but not one of these is *invalid*: it is counted, never an error.

MongoDB cannot sort these mixed values (numbers sort before strings, and ``"high"`` before
``"low"``), so the daemon never sorts on the field: it pages each level apart, high first, with
an equality (``$in``) filter that an index on ``{processing.status, <field>, _id}`` serves.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Priority(IntEnum):
    """A document's priority level; higher is taken first."""

    LOW = 1
    NORMAL = 5
    HIGH = 9


#: The stored values of each level that a query can match exactly (numbers match any numeric
#: type in MongoDB: 9, 9.0 and Int64(9) alike). NORMAL is "none of the others".
STORED_VALUES: dict[Priority, tuple[int | str, ...]] = {
    Priority.HIGH: (9, "high", "High", "HIGH"),
    Priority.LOW: (1, "low", "Low", "LOW"),
}
_NORMAL_VALUES: tuple[int | str, ...] = (5, "normal", "Normal", "NORMAL")
_BY_NUMBER: dict[float, Priority] = {float(level): level for level in Priority}
_BY_NAME = {
    value: level
    for level, values in (*STORED_VALUES.items(), (Priority.NORMAL, _NORMAL_VALUES))
    for value in values
    if isinstance(value, str)
}
#: Levels in the order they are taken.
ORDER: tuple[Priority, ...] = (Priority.HIGH, Priority.NORMAL, Priority.LOW)


def parse_priority(value: Any) -> tuple[Priority, bool]:
    """The level of a stored value, and whether the value was valid (missing/null are valid)."""
    if value is None:
        return Priority.NORMAL, True
    level: Priority | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):  # True is 1 in Python
        level = _BY_NUMBER.get(value)  # 9.0 finds 9, as in MongoDB
    elif isinstance(value, str):
        level = _BY_NAME.get(value)
    return (level, True) if level is not None else (Priority.NORMAL, False)


def excluded_from_normal() -> list[int | str]:
    """The values that are not normal: a normal page matches none of them (``$nin``)."""
    return [value for values in STORED_VALUES.values() for value in values]
