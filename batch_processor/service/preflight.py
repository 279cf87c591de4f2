"""Checks before the first job: a broken setup ends with one clear line, not an empty run.

* The source collection: a mistyped ``--database`` or ``--source-collection`` would otherwise
  create the database with an index and report ``pending=0``. A missing collection is named
  (with the similar names the database has) and nothing is created on it; a service waits for
  it to appear. An empty one is named too. Indexes are created once it exists.
* The source filter: the server is asked once whether it accepts the query.
* The LLM endpoint: one cheap request (the model list). Nothing answering there ends a batch
  run with exit 2; a service logs it and starts anyway (its retry queues wait the endpoint out).
  A refused key ends every mode.
"""

from __future__ import annotations

import structlog

from batch_processor.classifiers import Classifier
from batch_processor.errors import ConfigurationError, TransientError
from batch_processor.mongo.store import MongoStore
from batch_processor.settings import Mode, Settings

log = structlog.get_logger("batch_processor.service.preflight")


class SourceCheck:
    """Whether the source collection is there to work on; its indexes once it is."""

    def __init__(self, store: MongoStore) -> None:
        self._store = store
        self._indexed = False
        self._warned = False

    @property
    def passed(self) -> bool:
        """Whether the source collection was found (and indexed) already."""
        return self._indexed

    async def ready(self) -> bool:
        """True once the source collection exists (and is indexed); warns once until then."""
        if self._indexed:
            return True
        presence = await self._store.source_presence()
        if not presence.exists:
            if not self._warned:
                self._warned = True
                log.warning(
                    "the source collection does not exist: check --database and "
                    "--source-collection (nothing is created until it exists)",
                    source=self._store.source_name,
                    similar_collections=list(presence.other_collections),
                )
            return False
        if presence.documents == 0:
            log.warning("the source collection is empty", source=self._store.source_name)
        await self._store.source.check_filter()
        await self._store.ensure_indexes()
        self._indexed = True
        return True


async def check_endpoint(classifier: Classifier, settings: Settings) -> None:
    """Ask the LLM endpoint once whether it answers (see the module docstring)."""
    try:
        warning = await classifier.check_endpoint()
    except TransientError as exc:
        if settings.mode is Mode.BATCH:
            raise ConfigurationError(f"{exc.message} (--llm-base-url)") from None
        log.error("the LLM endpoint does not answer; starting anyway", error=exc.message)
        return
    if warning is not None:
        log.warning(warning)
