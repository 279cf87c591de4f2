"""Offline model versions: training one from the stored LLM labels, promoting, loading.

:func:`learn_version` is the one way a version is made, by the daemon (after
``cascade_learn_every`` new LLM labels) and by ``batch-processor model learn``: it reads every
LLM label the cascade stored and the documents' texts, trains in a thread (never on the event
loop), stores the version whole, and promotes it only if it agrees with the LLM more often
than the active version on the held-back slice. :func:`load_version` turns a stored version
into a model and its calibration. The storage is :class:`VersionStore` (MongoDB in production:
:class:`batch_processor.mongo.model_versions.MongoModelVersions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import structlog

from batch_processor.cascade.calibration import Calibration
from batch_processor.cascade.learning import MAX_LABELS, Change, Labelled, Outcome, learn
from batch_processor.classifiers.sentiment_model import SentimentModel
from batch_processor.classifiers.signals import Signals
from batch_processor.models import SourceDocument

log = structlog.get_logger("batch_processor.cascade")

#: The offline model version before any learnt one is promoted (the package's own model).
SHIPPED = "shipped"
T = TypeVar("T")


class VersionStore(Protocol):
    """Where versions, the active pointer and the learning lease live (see the module doc)."""

    async def active(self) -> str:
        """The active version's name (``shipped`` before any promotion)."""
        ...

    async def version(self, name: str) -> dict[str, Any] | None:
        """A stored version (``change`` as bytes, ``calibration`` as a dict), or None."""
        ...

    async def add(self, document: dict[str, Any]) -> str:
        """Store a version whole; its name."""
        ...

    async def promote(self, name: str, replacing: str) -> bool:
        """Make ``name`` active if ``replacing`` still is."""
        ...

    async def add_labels(self, count: int) -> int:
        """Count new LLM labels; the labels gathered since the last training."""
        ...

    async def claim_learning(self, holder: str, lease: timedelta, at_least: int) -> int | None:
        """Take the learning lease when ``at_least`` labels wait; the labels counted."""
        ...

    async def end_learning(self, holder: str, counted: int) -> None:
        """Release the learning lease; its labels are used."""
        ...

    async def labels(self, taxonomy_version: str | None) -> list[tuple[str, str, str]]:
        """(document id, the LLM's sentiment, the route) of every stored LLM answer, by id."""
        ...

    async def sources(self, doc_ids: Sequence[str], text_field: str) -> list[SourceDocument]:
        """The source documents of ``doc_ids`` that still exist."""
        ...


def off_the_loop(function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``function(*args)`` in a daemon thread of its own; its result as a future.

    Not the loop's default executor: a stop cancels the waiting and the process exits at once,
    where ``asyncio.run`` would wait for a training in the default executor to finish.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting task
            error = exc
            outcome = lambda: future.set_exception(error)  # noqa: E731
        else:
            outcome = lambda: future.set_result(result)  # noqa: E731
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=work, name="cascade-learning", daemon=True).start()
    return future


@dataclass(frozen=True)
class Loaded:
    """A version ready to classify with."""

    name: str
    model: SentimentModel
    calibration: Calibration


@dataclass(frozen=True)
class Learnt:
    """What one training did: the version stored, its figures, whether it was promoted."""

    name: str | None
    outcome: Outcome | None
    promoted: bool
    replacing: str
    labels: int

    def as_log(self) -> dict[str, Any]:
        """The figures for a log line or the learn command's output."""
        figures: dict[str, Any] = {
            "version": self.name,
            "promoted": self.promoted,
            "active_before": self.replacing,
            "labels": self.labels,
        }
        if self.outcome is not None:
            figures |= {
                "trained_on": self.outcome.trained_on,
                "held_back": self.outcome.held_back,
                "agreement": self.outcome.agreement,
                "active_agreement": self.outcome.current_agreement,
                "wins": self.outcome.wins,
                "losses": self.outcome.losses,
                "p_value": round(self.outcome.p_value, 4),
            }
        return figures


async def load_version(store: VersionStore, name: str, shipped: SentimentModel) -> Loaded:
    """The model and calibration of a stored version (``shipped``: the package's own)."""
    if name == SHIPPED:
        return Loaded(SHIPPED, shipped, Calibration.shipped())
    document = await store.version(name)
    if document is None:
        raise LookupError(f"model version {name!r} is not stored")
    change = Change.from_bytes(document["change"])
    model = await off_the_loop(change.apply, shipped)
    return Loaded(name, model, Calibration.of(document["calibration"]))


async def learn_version(
    store: VersionStore,
    *,
    signals: Signals,
    customer_turns: Callable[[SourceDocument], tuple[str, ...]],
    text_field: str,
    taxonomy_version: str | None,
    audit_share: float,
    said: Callable[[str], None] = lambda _: None,
) -> Learnt:
    """Train a version on every stored LLM label; store it; promote it if it is better."""
    shipped = SentimentModel.load()
    # The latest labels by document id: those the training would keep (see learning.py).
    labels = (await store.labels(taxonomy_version))[-MAX_LABELS:]
    replacing = await store.active()
    if not labels:
        return Learnt(None, None, False, replacing, 0)
    label_of = {doc_id: (label, route) for doc_id, label, route in labels}
    documents = await store.sources([doc_id for doc_id, _, _ in labels], text_field)
    audit_weight = 1.0 / audit_share if audit_share > 0 else 1.0
    labelled = [
        Labelled(
            doc_id=doc.id,
            turns=turns,
            label=label_of[doc.id][0],
            weight=audit_weight if label_of[doc.id][1] == "audit" else 1.0,
        )
        for doc in documents
        if (turns := customer_turns(doc))
    ]
    current = await load_version(store, replacing, shipped)
    said(f"training on {len(labelled)} LLM labels (a fifth held back), against {replacing}")
    outcome = await off_the_loop(learn, shipped, current.model, signals, labelled)
    name = await store.add(
        {
            "change": outcome.change.to_bytes(),
            "calibration": outcome.calibration.as_dict(),
            "trained_on": outcome.trained_on,
            "held_back": outcome.held_back,
            "agreement": outcome.agreement,
            "active_agreement": outcome.current_agreement,
            "wins": outcome.wins,
            "losses": outcome.losses,
            "promotable": outcome.better,
            "active_before": replacing,
            "taxonomy_version": taxonomy_version,
            "last_label": labels[-1][0],
        }
    )
    promoted = outcome.better and await store.promote(name, replacing)
    learnt = Learnt(name, outcome, promoted, replacing, len(labelled))
    log.info("offline model trained", **learnt.as_log())
    return learnt
