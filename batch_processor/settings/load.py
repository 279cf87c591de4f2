"""Building the effective settings from flags, environment, ``.env``, secrets and TOML."""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from batch_processor.errors import ConfigurationError
from batch_processor.settings.model import ENV_PREFIX, LEGACY_ENV_PREFIX, Settings


def load_settings(
    overrides: dict[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the effective settings; raise ConfigurationError naming any invalid setting.

    Args:
        overrides: values from command-line flags (``None`` values are ignored).
        config_file: a TOML file; ``BATCH_PROCESSOR_CONFIG`` is used when not given.
        environ: the environment to read bootstrap variables from (default ``os.environ``).

    """
    env = os.environ if environ is None else environ
    named = _bootstrap(env, "CONFIG")
    toml = config_file or (Path(named) if named else None)
    if toml is not None and not toml.is_file():
        raise ConfigurationError(f"config: the TOML file {toml} does not exist")
    secrets = _bootstrap(env, "SECRETS_DIR") or env.get("CREDENTIALS_DIRECTORY")
    secrets_dir = Path(secrets) if secrets and Path(secrets).is_dir() else None

    class _Effective(Settings):
        model_config = SettingsConfigDict(toml_file=toml, secrets_dir=secrets_dir)

    values = {key: value for key, value in (overrides or {}).items() if value is not None}
    try:
        effective = _Effective(**values)
    except ValidationError as exc:
        where = functools.partial(_source, values, env, toml, secrets_dir)
        raise ConfigurationError(_explain(exc, where)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config: {toml} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"config: a settings file ({toml or '.env'}) is not UTF-8 text: {exc.reason} "
            f"at byte {exc.start}"
        ) from None
    settings = Settings.model_construct(**dict(effective))
    settings.register_secrets()
    return settings


#: Variables with the prefix that are not settings: read before the settings, or by the tests.
BOOTSTRAP_NAMES = ("CONFIG", "SECRETS_DIR", "FAILPOINTS")


def _bootstrap(env: Any, name: str) -> str | None:
    """A variable read before the settings, by its new name or else its legacy one."""
    value = env.get(f"{ENV_PREFIX}{name}") or env.get(f"{LEGACY_ENV_PREFIX}{name}")
    return str(value) if value else None


def unknown_variables(
    environ: dict[str, str] | None = None, env_file: Path = Path(".env")
) -> list[str]:
    """One warning per variable (environment or ``.env``) that will not do what it seems to.

    A ``BATCH_PROCESSOR_*`` name that is no setting (a typo: ``BATCH_PROCESSOR_BATCH_SIZ``)
    would otherwise be ignored silently and the default used; a legacy ``BATCH_*`` name of a
    setting works for this release but should be renamed (or is ignored, when the new name is
    set too). Other ``BATCH_*`` names are left alone: they may belong to another program.
    """
    names = [name.upper() for name in Settings.model_fields] + list(BOOTSTRAP_NAMES)
    known = {f"{ENV_PREFIX}{name}" for name in names}
    env = os.environ if environ is None else environ
    found = [(name, "the environment") for name in env]
    if env_file.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            found += [(name, str(env_file)) for name in dotenv_values(env_file)]
    present = {name.upper() for name, _ in found}
    warnings = []
    for name, where in found:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            # Compared without the prefix, which would make every pair of names look alike.
            close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), names, 1, 0.7)
            hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
            warnings.append(f"unknown variable {name} in {where} is ignored{hint}")
        elif upper.startswith(LEGACY_ENV_PREFIX) and not upper.startswith(ENV_PREFIX):
            new = f"{ENV_PREFIX}{upper.removeprefix(LEGACY_ENV_PREFIX)}"
            if new not in known or new == f"{ENV_PREFIX}FAILPOINTS":  # a test hook: new name only
                continue
            if new in present:
                warnings.append(f"variable {name} in {where} is ignored: {new} is set")
            else:
                warnings.append(
                    f"variable {name} in {where} is deprecated: rename it {new} "
                    f"(the {LEGACY_ENV_PREFIX} prefix will not be read after this release)"
                )
    return warnings


def _source(
    flags: dict[str, Any], env: Any, toml: Path | None, secrets_dir: Path | None, name: str
) -> str | None:
    """Where the value of setting ``name`` came from, in the sources' order; None: a flag.

    The first source that has it gave the value (flags, environment, ``.env``, the same two
    under the legacy prefix, secrets, TOML).
    """
    if name in flags:
        return None
    dotenv = Path(".env")
    in_dotenv: dict[str, str | None] = {}
    if dotenv.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            in_dotenv = dotenv_values(dotenv)
    for prefix in (ENV_PREFIX, LEGACY_ENV_PREFIX):
        variable = f"{prefix}{name.upper()}"
        if variable in env:
            return f"the environment variable {variable}"
        if variable in in_dotenv:
            return f"{dotenv}: {variable}"
    if secrets_dir is not None and (secrets_dir / name).is_file():
        return f"the secrets file {secrets_dir / name}"
    if toml is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            if name in tomllib.loads(toml.read_text(encoding="utf-8")):
                return f"{toml}: key {name}"
    return None


def _explain(exc: ValidationError, where: Callable[[str], str | None] = lambda _: None) -> str:
    """One line per invalid setting, naming it and where its value came from.

    A value from a file names the file and the key; one from a flag or the environment, the
    flag and the variable. An unknown key (a typo in a TOML file) is named with the setting
    it most likely meant, never with a flag that does not exist.
    """
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a rule across settings: its message names them
            lines.append(f"invalid settings: {message}")
            continue
        name = ".".join(str(part) for part in error["loc"])
        top = str(error["loc"][0])
        field = Settings.model_fields.get(top)
        source = where(top)
        if field is None:
            close = difflib.get_close_matches(top, list(Settings.model_fields), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            lines.append(f"unknown setting {top} in {source or 'the settings'}{hint}")
            continue
        if source is not None:
            lines.append(f"invalid setting {name} in {source}: {message}")
            continue
        extra = field.json_schema_extra
        flags = extra.get("flags") if isinstance(extra, dict) else None
        flag = flags[0] if isinstance(flags, list) and flags else f"--{top.replace('_', '-')}"
        lines.append(f"invalid setting {name} ({flag} / {ENV_PREFIX}{top.upper()}): {message}")
    return "\n".join(lines)
