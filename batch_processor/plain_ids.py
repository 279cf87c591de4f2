"""Document ids as people read them (logs, tables)."""

from __future__ import annotations

import json


def plain_id(doc_id: str) -> str:
    """A document id for people (logs, tables): ``65f0...`` rather than ``{"$oid": "65f0..."}``.

    ``doc_id`` is the canonical extended JSON the pipeline carries; ObjectIds and numbers show
    their value, strings themselves, anything else (a compound ``_id``) its JSON.
    """
    try:
        value = json.loads(doc_id)
    except ValueError:
        return doc_id
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key in _PLAIN_WRAPPERS and isinstance(inner, str):
            return inner
    return doc_id


#: Extended-JSON wrappers whose value is the id a person knows.
_PLAIN_WRAPPERS = frozenset({"$oid", "$numberInt", "$numberLong", "$numberDouble", "$uuid"})
