"""Command-line flags generated from the :class:`~batch_processor.settings.Settings` model.

Each setting is written once, in ``Settings``: its flag (``--batch-size`` for ``batch_size``),
type, help text, default and environment variable are all derived from the field, and so is the
README's settings table (:func:`settings_table`, checked by a test). A field's
``json_schema_extra`` may add flag aliases (``{"flags": ["--taxonomy"]}``) or keep it off the
command line (``{"cli": False}``, with the reason in the field's comment).
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from batch_processor.settings import ENV_PREFIX, Settings
from batch_processor.settings.cascade import CascadeSettings
from batch_processor.settings.groups import (
    FileSettings,
    InputSettings,
    LogSettings,
    MongoSettings,
    ProcessingSettings,
    ServiceSettings,
)
from batch_processor.settings.llm import BatchRouteSettings, LLMSettings


@dataclass(frozen=True, slots=True)
class SettingFlag:
    """How one setting appears on the command line."""

    name: str
    flags: tuple[str, ...]
    convert: Callable[[str], Any] | None  # None: a --flag/--no-flag switch
    help: str
    metavar: str


def _comma_list(value: str) -> list[str]:
    """``a,b,c`` -> ``["a", "b", "c"]`` (list settings on the command line)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``: the one non-None type of an optional annotation."""
    if get_origin(annotation) in (Union, types.UnionType):
        (inner,) = [arg for arg in get_args(annotation) if arg is not type(None)]
        return inner
    return annotation


def _converter(annotation: Any) -> Callable[[str], Any] | None:
    base = _base_type(annotation)
    if base is bool:
        return None
    if get_origin(base) in (list, tuple):
        return _comma_list
    if base in (int, float, Path):
        return base  # type: ignore[no-any-return]
    return str  # str, SecretStr and enums: Settings validates the text


def _metavar(annotation: Any) -> str:
    base = _base_type(annotation)
    if isinstance(base, type) and issubclass(base, Enum):
        return "{" + ",".join(str(member.value) for member in base) + "}"
    if get_origin(base) in (list, tuple):
        return "A,B,..."
    names = {int: "N", float: "NUMBER", Path: "PATH"}
    return names.get(base, "TEXT")


def default_text(field: FieldInfo) -> str:
    """The default of a setting as a person reads it (``unset`` for None)."""
    factory = field.default_factory
    default = factory() if factory is not None else field.default  # type: ignore[call-arg]
    if default is None:
        return "unset"
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, list | tuple):
        return ",".join(str(item) for item in default) or "none"
    return str(default)


def _choices(annotation: Any) -> str:
    base = _base_type(annotation)
    if isinstance(base, type) and issubclass(base, Enum):
        return f" One of: {', '.join(str(member.value) for member in base)}."
    return ""


def setting_flags() -> Iterator[SettingFlag]:
    """The flag of every setting that has one, in the model's order."""
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("cli") is False:
            continue
        aliases = extra.get("flags") or []
        assert isinstance(aliases, list)
        flags = (f"--{name.replace('_', '-')}", *(str(alias) for alias in aliases))
        meaning = (field.description or "") + _choices(field.annotation)
        env = f"{ENV_PREFIX}{name.upper()}"
        text = f"{meaning} [default: {default_text(field)}; env: {env}]"
        yield SettingFlag(
            name,
            flags,
            _converter(field.annotation),
            text.replace("%", "%%"),
            _metavar(field.annotation),
        )


#: The help's groups: the settings' own groups (``settings/``), in the model's order.
GROUPS: tuple[tuple[type[BaseModel], str], ...] = (
    (MongoSettings, "MongoDB"),
    (InputSettings, "source: what is read"),
    (ServiceSettings, "service: modes, schedule, health, stopping"),
    (ProcessingSettings, "processing: pages, concurrency, retries, the classifier"),
    (LLMSettings, "LLM"),
    (BatchRouteSettings, "LLM: the Batch API route"),
    (CascadeSettings, "classifier: the confidence cascade"),
    (FileSettings, "files: the batch directory, queues, recovery"),
    (LogSettings, "output: logs and progress"),
)


def _group_of(name: str) -> str:
    """The help group a setting is listed in."""
    for model, title in GROUPS:
        if name in model.model_fields:
            return title
    return "other settings"


def add_setting_flags(parser: argparse.ArgumentParser, only: Collection[str] | None = None) -> None:
    """Add the settings' flags (or only those named) to ``parser``, in their groups.

    Unset flags stay None (flags override ``BATCH_PROCESSOR_*`` variables and ``--config``). A
    deprecated setting keeps its flag but is not listed.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in setting_flags():
        if only is not None and flag.name not in only:
            continue
        title = _group_of(flag.name)
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        group = groups[title]
        shown = argparse.SUPPRESS if flag.help.startswith("Deprecated") else flag.help
        if flag.convert is None:
            group.add_argument(
                *flag.flags,
                dest=flag.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=shown,
            )
        else:
            group.add_argument(
                *flag.flags,
                dest=flag.name,
                type=flag.convert,
                metavar=flag.metavar,
                help=shown,
            )


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (flags left unset are not included)."""
    return {
        name: value
        for name in Settings.model_fields
        if (value := getattr(args, name, None)) is not None
    }


def settings_table() -> str:
    """The README's settings table, in Markdown."""
    by_name = {flag.name: flag.flags[0] for flag in setting_flags()}
    lines = [
        "| setting | env variable | flag | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        flag = f"`{by_name[name]}`" if name in by_name else "(no flag)"
        env = f"`{ENV_PREFIX}{name.upper()}`"
        meaning = (field.description or "") + _choices(field.annotation)
        lines.append(f"| `{name}` | {env} | {flag} | `{default_text(field)}` | {meaning} |")
    return "\n".join(lines) + "\n"
