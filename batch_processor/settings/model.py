"""The Settings model: every setting of batch_processor, its type, default and meaning.

The settings are declared by concern in :mod:`.groups`, :mod:`.llm` and :mod:`.cascade`; this
module composes them, says where their values come from, and checks the rules that span groups.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from batch_processor.redaction import MASK, redact_text, register_secret, register_url_secrets
from batch_processor.settings.cascade import CascadeSettings
from batch_processor.settings.groups import (
    FileSettings,
    InputSettings,
    LogFormat,
    LogSettings,
    Mode,
    MongoSettings,
    ProcessingSettings,
    ServiceSettings,
)
from batch_processor.settings.llm import BatchRouteSettings, LLMSettings, Route

__all__ = ["ENV_PREFIX", "LEGACY_ENV_PREFIX", "LogFormat", "Mode", "Route", "Settings"]

#: The prefix of every environment variable (and ``.env`` name) of batch_processor.
ENV_PREFIX = "BATCH_PROCESSOR_"
#: The prefix of releases up to 0.1: still read, below the new one, with a deprecation
#: warning; to be removed in the next release. Too generic to warn about names it does not
#: know (``BATCH_SIZE`` may belong to another program).
LEGACY_ENV_PREFIX = "BATCH_"


# pydantic collects the fields of the last base first: the groups are listed last to first,
# so that --help and the README's table read MongoDB, input, service, ..., logs.
class Settings(
    LogSettings,
    FileSettings,
    CascadeSettings,
    BatchRouteSettings,
    LLMSettings,
    ProcessingSettings,
    ServiceSettings,
    InputSettings,
    MongoSettings,
    BaseSettings,
):
    """Every setting of batch_processor, with its default; see the README's table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        # Unknown names in .env are warned about (settings.load.unknown_variables), not fatal.
        dotenv_filtering="only_existing",
        extra="forbid",
        validate_default=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Secrets files are named like the setting (``mongodb_uri``); TOML comes last.

        The legacy ``BATCH_`` names come after every ``BATCH_PROCESSOR_`` name, so a variable
        renamed in one place and not yet in another takes the new value.
        """
        # Unprefixed file names match systemd's LoadCredential=mongodb_uri:... naming.
        secrets = SecretsSettingsSource(
            settings_cls, secrets_dir=settings_cls.model_config.get("secrets_dir"), env_prefix=""
        )
        legacy_env = EnvSettingsSource(settings_cls, env_prefix=LEGACY_ENV_PREFIX)
        legacy_dotenv = DotEnvSettingsSource(settings_cls, env_prefix=LEGACY_ENV_PREFIX)
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            legacy_env,
            legacy_dotenv,
            secrets,
            TomlConfigSettingsSource(settings_cls),
        )

    @model_validator(mode="after")
    def _limit_needs_jobs(self) -> Settings:
        """A limit per job means nothing to continuous mode, whose jobs follow each insert."""
        if self.limit is not None and self.mode is Mode.CONTINUOUS:
            raise ValueError("limit applies to batch and scheduled mode, not continuous")
        return self

    @model_validator(mode="after")
    def _route_fits_mode(self) -> Settings:
        """A service sends backlogs to the Batch API and the rest online: that is ``auto``."""
        if self.llm_route is Route.BATCH and self.mode is Mode.CONTINUOUS:
            raise ValueError(
                "llm_route batch applies to batch and scheduled mode; a continuous service "
                "uses auto (backlogs to the Batch API, new documents online)"
            )
        return self

    @model_validator(mode="after")
    def _deprecated_names(self) -> Settings:
        """``claim_ttl`` (deprecated) sets the lease unless ``lease_seconds`` is given too."""
        if self.claim_ttl is not None and "lease_seconds" not in self.model_fields_set:
            self.lease_seconds = self.claim_ttl
        return self

    def masked(self) -> dict[str, Any]:
        """The effective settings as JSON-safe values, every secret shown as ``**********``.

        Secret settings are masked whole; credentials inside other values (a password in
        ``llm_base_url``, an ``?api-key=``) are masked where they stand.
        """
        data: dict[str, Any] = json.loads(self.model_dump_json())
        for name, field in type(self).model_fields.items():
            is_secret = "SecretStr" in str(field.annotation)
            if is_secret and getattr(self, name) is not None:
                data[name] = MASK
            elif isinstance(data.get(name), str):
                data[name] = redact_text(data[name])
        return data

    def register_secrets(self) -> None:
        """Make every secret of these settings masked wherever it would be printed."""
        if self.mongodb_uri is not None:
            uri = self.mongodb_uri.get_secret_value()
            register_secret(uri)
            register_url_secrets(uri)
        if self.llm_api_key is not None:
            register_secret(self.llm_api_key.get_secret_value())
        register_url_secrets(self.llm_base_url)
