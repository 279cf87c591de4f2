"""Ids and source documents between BSON and the daemon's plain JSON-safe values.

Source documents are read raw and decoded one by one, so one undecodable document (a string that
is not UTF-8, written by another driver) cannot fail the page that holds it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import bson
import structlog
from bson import json_util
from bson.codec_options import CodecOptions
from bson.errors import InvalidBSON
from bson.json_util import CANONICAL_JSON_OPTIONS, RELAXED_JSON_OPTIONS
from bson.raw_bson import RawBSONDocument

from batch_processor.models import SourceDocument
from batch_processor.mongo.errors import first_line

_log = structlog.get_logger("batch_processor.mongo")
_SURROGATES = re.compile("[\ud800-\udfff]")
Raw = dict[str, Any]

RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
_STRICT: CodecOptions[Raw] = CodecOptions(tz_aware=True)
_ESCAPED: CodecOptions[Raw] = CodecOptions(
    tz_aware=True, unicode_decode_error_handler="surrogateescape"
)


def encode_id(value: Any) -> str:
    """A MongoDB ``_id`` as canonical extended JSON: stable, type-preserving, JSON-safe."""
    return json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS)


def decode_id(value: str) -> Any:
    """The inverse of :func:`encode_id`."""
    return json_util.loads(value, json_options=CANONICAL_JSON_OPTIONS)


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (dates as ISO strings, ObjectIds as {"$oid": ...})."""
    return json.loads(json_util.dumps(value, json_options=RELAXED_JSON_OPTIONS))


def raw_id(raw: RawBSONDocument) -> Any:
    """The ``_id`` of a raw document, decodable even when other fields are not."""
    return bson.decode(raw.raw, codec_options=_ESCAPED)["_id"]


def decode_source(raw: RawBSONDocument, text_field: str | None = None) -> SourceDocument | None:
    """One source document from its raw BSON; one that cannot be decoded carries a problem.

    A string that is not valid UTF-8 (or encodes a lone surrogate) is read with its bad bytes
    replaced by U+FFFD. In the text (``text_field``, or anywhere when it is not given) that is
    a DATA problem naming each such field, so the document ends ``failed`` instead of failing
    its whole page; in another field (metadata) the document is classified and the fields are
    listed in ``replaced`` (stored with its result). None if even its ``_id`` is unusable (it
    is logged and left pending: no query could address it).
    """
    try:
        doc = bson.decode(raw.raw, codec_options=_STRICT)
        return SourceDocument(id=encode_id(doc.pop("_id")), fields=json_safe(doc))
    except InvalidBSON:
        pass
    try:
        doc = bson.decode(raw.raw, codec_options=_ESCAPED)
    except InvalidBSON as exc:
        _log.error("unreadable source document skipped", error=first_line(exc))
        return None
    bad: list[str] = []
    raw_id = _scrub(doc.pop("_id"), "_id", bad)
    if bad:
        _log.error("source document with a non-UTF-8 _id skipped", id=repr(raw_id)[:120])
        return None
    fields = _scrub(doc, "", bad)
    in_text = [path for path in bad if text_field is None or _within(path, text_field)]
    if not in_text:
        return SourceDocument(id=encode_id(raw_id), fields=json_safe(fields), replaced=tuple(bad))
    problem = f"not valid UTF-8 in field(s) {', '.join(repr(path) for path in in_text[:5])}"
    return SourceDocument(id=encode_id(raw_id), fields=json_safe(fields), problem=problem)


def _within(path: str, field: str) -> bool:
    """Whether ``path`` is ``field`` or inside it."""
    return path == field or path.startswith(f"{field}.")


def _scrub(value: Any, path: str, bad: list[str]) -> Any:
    """``value`` with undecodable bytes replaced by U+FFFD; their paths appended to ``bad``."""
    if isinstance(value, str):
        if _SURROGATES.search(value) is None:
            return value
        bad.append(path)
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {
            _scrub(key, _join(path, "<key>"), bad): _scrub(item, _join(path, str(key)), bad)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_scrub(item, _join(path, str(index)), bad) for index, item in enumerate(value)]
    return value


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part
