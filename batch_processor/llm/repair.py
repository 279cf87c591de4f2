"""Repairing LLM replies that are nearly right, before they are validated.

Models answer "English" when asked for "en", "Billing" for "billing", eight themes when five are
allowed, a score of 1.5 on a -1..1 scale. Asking again for such a reply costs a request and
often gets the same answer. Whatever has one obvious correct reading is repaired here (and the
repair is recorded with the result and counted); only what cannot be read with confidence — a
label outside the taxonomy, a missing field, text that is not JSON — is asked again.

Pure functions: :func:`repair_reply` takes the parsed reply and the taxonomy's limits and
returns the repaired reply and the names of the fields it changed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from batch_processor.classifiers.taxonomy import RESOLUTIONS

#: Language names (English and native) and ISO 639-2/3 codes -> ISO 639-1.
LANGUAGES: dict[str, str] = {
    **{
        name: code
        for code, names in {
            "en": ("english", "eng", "englisch", "anglais", "inglés", "ingles", "inglese"),
            "de": ("german", "deutsch", "deu", "ger", "allemand", "alemán", "tedesco"),
            "fr": ("french", "français", "francais", "fra", "fre", "französisch", "francés"),
            "es": ("spanish", "español", "espanol", "spa", "castellano", "espagnol"),
            "it": ("italian", "italiano", "ita", "italien"),
            "pt": ("portuguese", "português", "portugues", "por"),
            "nl": ("dutch", "nederlands", "nld", "dut", "flemish"),
            "sv": ("swedish", "svenska", "swe"),
            "da": ("danish", "dansk", "dan"),
            "no": ("norwegian", "norsk", "nor", "nob", "nno", "bokmål"),
            "fi": ("finnish", "suomi", "fin"),
            "pl": ("polish", "polski", "pol"),
            "cs": ("czech", "čeština", "cestina", "ces", "cze"),
            "ru": ("russian", "русский", "rus"),
            "uk": ("ukrainian", "українська", "ukr"),
            "tr": ("turkish", "türkçe", "turkce", "tur"),
            "el": ("greek", "ελληνικά", "ell", "gre"),
            "ar": ("arabic", "العربية", "ara"),
            "he": ("hebrew", "עברית", "heb"),
            "hi": ("hindi", "हिन्दी", "hin"),
            "zh": ("chinese", "中文", "mandarin", "zho", "chi", "cmn"),
            "ja": ("japanese", "日本語", "jpn"),
            "ko": ("korean", "한국어", "kor"),
            "vi": ("vietnamese", "tiếng việt", "vie"),
            "th": ("thai", "ไทย", "tha"),
            "id": ("indonesian", "bahasa indonesia", "ind"),
            "ms": ("malay", "bahasa melayu", "msa", "may"),
            "ro": ("romanian", "română", "romana", "ron", "rum"),
            "hu": ("hungarian", "magyar", "hun"),
            "bg": ("bulgarian", "български", "bul"),
            "hr": ("croatian", "hrvatski", "hrv"),
            "sr": ("serbian", "српски", "srp"),
            "sk": ("slovak", "slovenčina", "slk", "slo"),
            "sl": ("slovenian", "slovene", "slovenščina", "slv"),
            "ca": ("catalan", "català", "cat"),
            "fa": ("persian", "farsi", "فارسی", "fas", "per"),
            "bn": ("bengali", "bangla", "বাংলা", "ben"),
            "ur": ("urdu", "اردو", "urd"),
            "ta": ("tamil", "தமிழ்", "tam"),
            "tl": ("tagalog", "filipino", "tgl", "fil"),
            "sw": ("swahili", "kiswahili", "swa"),
            "af": ("afrikaans", "afr"),
            "et": ("estonian", "eesti", "est"),
            "lv": ("latvian", "latviešu", "lav"),
            "lt": ("lithuanian", "lietuvių", "lit"),
        }.items()
        for name in names
    },
    **{name: "und" for name in ("unknown", "undetermined", "none", "n/a", "mixed", "multiple")},
}
_TAG = re.compile(r"^([a-z]{2})(?:[-_][a-z0-9]{2,8})+$")  # en-US, pt_BR, zh-Hans-CN
_LABEL_SEPARATORS = re.compile(r"[\s\-/]+")
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """What a valid reply may hold (from the taxonomy)."""

    categories: Collection[str]
    urgency: Collection[str]
    emotions: Collection[str]
    sentiments: Collection[str]
    max_themes: int
    max_summary: int
    fields: Collection[str]


def parse_reply(content: str) -> tuple[Any, list[str]]:
    """The reply's JSON; a code fence around it is removed (and recorded). Raises ValueError."""
    repairs: list[str] = []
    fenced = _FENCE.match(content)
    if fenced:
        content = fenced.group(1)
        repairs.append("fence")
    return json.loads(content), repairs


def repair_reply(reply: Any, limits: ReplyLimits) -> tuple[Any, list[str]]:
    """``reply`` with its near misses repaired, and the names of the fields repaired.

    A reply that is not an object, or whose problems have no obvious reading, is returned as
    it is (repaired where it could be): validation then says what is wrong.
    """
    if not isinstance(reply, dict):
        return reply, []
    fixed = dict(reply)
    repairs: list[str] = []

    def put(name: str, value: Any) -> None:
        if name in fixed and value != fixed[name]:
            fixed[name] = value
            repairs.append(name)

    for extra in [key for key in fixed if key not in limits.fields]:
        del fixed[extra]
        repairs.append(f"extra:{extra}")
    for name, labels in (
        ("category", limits.categories),
        ("urgency", limits.urgency),
        ("emotion", limits.emotions),
        ("sentiment_start", limits.sentiments),
        ("sentiment_end", limits.sentiments),
        ("resolved", RESOLUTIONS),
    ):
        put(name, normalise_label(fixed.get(name), labels))
    if isinstance(fixed.get("resolved"), bool):  # true/false for yes/no
        put("resolved", "yes" if fixed["resolved"] else "no")
    put("language", normalise_language(fixed.get("language")))
    put("themes", trim_themes(fixed.get("themes"), limits.max_themes))
    put("summary", trim_text(fixed.get("summary"), limits.max_summary))
    put("confidence", clamp(fixed.get("confidence"), 0.0, 1.0, percent=True))
    sentiment = fixed.get("sentiment")
    if isinstance(sentiment, dict):
        repaired = dict(sentiment)
        repaired["label"] = normalise_label(sentiment.get("label"), limits.sentiments)
        repaired["score"] = clamp(sentiment.get("score"), -1.0, 1.0)
        put("sentiment", repaired)
    return fixed, repairs


def normalise_label(value: Any, labels: Iterable[str]) -> Any:
    """``"Technical Issue"`` -> ``"technical_issue"`` when that is a label; else unchanged."""
    if not isinstance(value, str):
        return value
    candidate = _LABEL_SEPARATORS.sub("_", value.strip().casefold()).strip("_.")
    return candidate if candidate in set(labels) else value


def normalise_language(value: Any) -> Any:
    """ISO 639-1 from a name, a regional tag or a 639-2/3 code; ``"und"`` if unknown."""
    if not isinstance(value, str):
        return value
    text = value.strip().casefold()
    if re.fullmatch(r"[a-z]{2}|und", text):
        return text
    tag = _TAG.match(text)
    if tag:
        return tag.group(1)
    words = re.sub(r"\s*\(.*\)\s*$", "", text)  # "english (us)"
    return LANGUAGES.get(words, "und")


def trim_themes(value: Any, limit: int) -> Any:
    """At most ``limit`` distinct, non-empty themes of at most 80 characters."""
    if isinstance(value, str):
        value = [part for part in re.split(r"[,;]", value)]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return value
    themes: list[str] = []
    for item in value:
        theme = " ".join(item.split())[:80]
        if theme and theme.casefold() not in {t.casefold() for t in themes}:
            themes.append(theme)
    return themes[:limit]


def trim_text(value: Any, limit: int) -> Any:
    """At most ``limit`` characters, cut at a word boundary, whitespace collapsed."""
    if not isinstance(value, str):
        return value
    text = " ".join(value.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"


def clamp(value: Any, low: float, high: float, *, percent: bool = False) -> Any:
    """A number within [low, high] (a numeric string is read; 85 as a percentage is 0.85).

    With ``percent``, values from 2 to 100 are read as percentages; 1.7 is an overshoot.
    """
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("%"))
        except ValueError:
            return value
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return value
    if percent and 2 <= value <= 100:
        value = value / 100
    return min(high, max(low, float(value)))
