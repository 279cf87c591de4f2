"""Settings: the only place that reads the environment, ``.env``, a TOML file or secrets.

Precedence, highest first: command-line flags, ``BATCH_PROCESSOR_*`` environment variables, ``.env``
(then the legacy ``BATCH_*`` names of release 0.1, with a deprecation warning),
the secrets directory (``BATCH_PROCESSOR_SECRETS_DIR``, else systemd's ``$CREDENTIALS_DIRECTORY``),
the TOML file given by ``--config`` (or ``BATCH_PROCESSOR_CONFIG``), then the defaults below.
Everything else in the package receives plain values from a ``Settings`` object.
"""

from batch_processor.settings.load import load_settings, unknown_variables
from batch_processor.settings.model import (
    ENV_PREFIX,
    LEGACY_ENV_PREFIX,
    LogFormat,
    Mode,
    Route,
    Settings,
)

__all__ = [
    "ENV_PREFIX",
    "LEGACY_ENV_PREFIX",
    "LogFormat",
    "Mode",
    "Route",
    "Settings",
    "load_settings",
    "unknown_variables",
]
