"""The cascade's model versions in a running worker: the active one in use, new ones learnt.

One :class:`ModelKeeper` runs beside the jobs of a ``--classifier cascade`` worker (a monitor
of the runner). Every ``CHECK_SECONDS`` it

1. makes the cascade classify with the active version, if another worker (or ``model learn``
   / ``model rollback``) changed it: every worker of a database uses the same version;
2. adds the LLM labels this worker gathered to the shared count, and when
   ``cascade_learn_every`` have gathered, takes the learning lease (one worker at a time)
   and trains a version (:func:`batch_processor.cascade.versions.learn_version`: in a thread
   of its own, never on the event loop).

A check that fails (MongoDB away) is logged and made again at the next; the worker goes on
classifying with the version it has.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog

from batch_processor.cascade.classifier import CascadeClassifier
from batch_processor.cascade.versions import Learnt, VersionStore, learn_version, load_version
from batch_processor.classifiers.offline import OfflineClassifier
from batch_processor.classifiers.sentiment_model import SentimentModel
from batch_processor.documents.outcomes import Outcomes
from batch_processor.documents.text import ExtractedText
from batch_processor.errors import describe
from batch_processor.models import SourceDocument
from batch_processor.settings import Settings

log = structlog.get_logger("batch_processor.cascade")

#: Seconds between two checks of the active version and the label count.
CHECK_SECONDS = 30.0
#: A worker that trains holds the learning lease this long (training takes seconds).
LEARNING_LEASE = timedelta(minutes=30)


class ModelKeeper:
    """See the module docstring."""

    def __init__(
        self,
        cascade: CascadeClassifier,
        store: VersionStore,
        *,
        outcomes: Outcomes,
        learn_every: int,
        audit_share: float,
        sleep: Callable[[float], Awaitable[None]],
        every: float = CHECK_SECONDS,
    ) -> None:
        self.cascade = cascade
        self.store = store
        self.outcomes = outcomes
        self.learn_every = learn_every
        self.audit_share = audit_share
        self.sleep = sleep
        self.every = every
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._reported = 0
        self._shipped: SentimentModel | None = None

    async def run(self) -> None:
        """Check, then check again every ``every`` seconds, until cancelled."""
        while True:
            await self.check()
            await self.sleep(self.every)

    async def check(self) -> None:
        """One check (see the module docstring); a failure is logged, never raised."""
        try:
            await self.follow()
            await self.count_and_learn()
        except Exception as exc:  # noqa: BLE001 - a bad version or an outage never stops work
            log.warning("model version check failed; trying again later", error=describe(exc))

    async def follow_or_warn(self) -> None:
        """:meth:`follow` once at start; if MongoDB cannot say, start with the shipped model."""
        try:
            await self.follow()
        except Exception as exc:  # noqa: BLE001 - the shipped model is a sound fallback
            log.warning("active model version unknown; the shipped model is used until it is",
                        error=describe(exc))  # fmt: skip

    async def follow(self) -> None:
        """Classify with the active version, if it is not the one in use."""
        active = await self.store.active()
        if active != self.cascade.model_version:
            loaded = await load_version(self.store, active, self._shipped_model())
            self.cascade.use_model(loaded.name, loaded.model, loaded.calibration)

    async def count_and_learn(self) -> None:
        """Add this worker's new LLM labels; learn when enough have gathered."""
        labels = self.cascade.state.llm_labels
        if labels == self._reported:
            return
        waiting = await self.store.add_labels(labels - self._reported)
        self._reported = labels
        if self.learn_every and waiting >= self.learn_every:
            await self.learn_now()

    async def learn_now(self) -> None:
        """Train a version if this worker gets the learning lease; use it if promoted."""
        counted = await self.store.claim_learning(self.holder, LEARNING_LEASE, self.learn_every)
        if counted is None:
            return  # another worker is training, or another just did
        try:
            learnt = await learn(self.store, self.cascade.offline, self.outcomes, self.audit_share)
        finally:
            # The labels are used even if training failed: the next try waits for new ones.
            await self.store.end_learning(self.holder, counted)
        if learnt.promoted:
            await self.follow()

    def _shipped_model(self) -> SentimentModel:
        """The shipped model (read once)."""
        if self._shipped is None:
            self._shipped = SentimentModel.load()
        return self._shipped


async def learn(
    store: VersionStore,
    offline: OfflineClassifier,
    outcomes: Outcomes,
    audit_share: float,
    said: Callable[[str], None] = lambda _: None,
) -> Learnt:
    """Train a version on the stored LLM labels now (the keeper's way and ``model learn``'s)."""

    def customer_turns(doc: SourceDocument) -> tuple[str, ...]:
        """The customer's turns of a labelled document, read as the pipeline reads them."""
        text = outcomes.text(doc)
        if not isinstance(text, ExtractedText):
            return ()  # no usable text any more: a DATA failure
        return tuple(turn.text for turn in text.conversation.customer)

    return await learn_version(
        store,
        signals=offline.signals,
        customer_turns=customer_turns,
        text_field=outcomes.text_field,
        taxonomy_version=offline.taxonomy.version,
        audit_share=audit_share,
        said=said,
    )


async def learn_now(
    settings: Settings, store: VersionStore, said: Callable[[str], None] = lambda _: None
) -> Learnt:
    """``model learn``: train a version now, with the offline model the settings describe."""
    from batch_processor.service.classifier_setup import offline_classifier
    from batch_processor.service.jobs import job_outcomes, pipeline_options

    offline = offline_classifier(settings)
    try:
        outcomes = job_outcomes(pipeline_options(settings), "model-learn", offline)
        return await learn(store, offline, outcomes, settings.cascade_audit_share, said=said)
    finally:
        await offline.aclose()
