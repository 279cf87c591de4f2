"""Values as a person reads them in a table: never ``None``, ``[]`` or ``{'DATA': 5}``."""

from __future__ import annotations

from typing import Any


def shown(value: Any) -> str:
    """``value`` for a table cell: ``-`` for nothing, lists and mappings as plain text."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {shown(item)}" for key, item in value.items())
    if isinstance(value, list | tuple | set):
        return ", ".join(shown(item) for item in value)
    return str(value)
