"""Building the effective settings from flags, environment, ``.env``, secrets and TOML."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from batch_processor.errors import ConfigurationError
from batch_processor.settings.model import ENV_PREFIX, Settings


def load_settings(
    overrides: dict[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the effective settings; raise ConfigurationError naming any invalid setting.

    Args:
        overrides: values from command-line flags (``None`` values are ignored).
        config_file: a TOML file; ``BATCH_CONFIG`` is used when not given.
        environ: the environment to read bootstrap variables from (default ``os.environ``).

    """
    env = os.environ if environ is None else environ
    toml = config_file or (Path(env["BATCH_CONFIG"]) if env.get("BATCH_CONFIG") else None)
    if toml is not None and not toml.is_file():
        raise ConfigurationError(f"config: the TOML file {toml} does not exist")
    secrets = env.get("BATCH_SECRETS_DIR") or env.get("CREDENTIALS_DIRECTORY")
    secrets_dir = Path(secrets) if secrets and Path(secrets).is_dir() else None

    class _Effective(Settings):
        model_config = SettingsConfigDict(toml_file=toml, secrets_dir=secrets_dir)

    values = {key: value for key, value in (overrides or {}).items() if value is not None}
    try:
        effective = _Effective(**values)
    except ValidationError as exc:
        raise ConfigurationError(_explain(exc)) from None
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


def _explain(exc: ValidationError) -> str:
    """One line per invalid setting, naming it and its environment variable."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        hint = f" (--{name.replace('_', '-')} / {ENV_PREFIX}{name.upper()})"
        lines.append(f"invalid setting {name}{hint}: {error['msg']}")
    return "\n".join(lines)
