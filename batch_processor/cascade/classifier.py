"""``--classifier cascade``: the offline model first, the LLM only where it is unsure.

Each document is classified offline; :class:`~.escalation.Escalation` decides from the
offline sentiment's sureness whether the LLM is asked too. An escalated document's result is
the LLM's answer; a sure one keeps the offline answer (an audited one also records the LLM's,
to measure agreement). Every result carries a :class:`~batch_processor.models.CascadeRecord`:
the route, both answers, the calibrated confidence, the threshold and the offline model
version, so that ``report`` can show agreement and the learning can train on the LLM's labels.

The LLM tier is any :class:`Classifier` (the LLM classifier, behind the dedupe cache when that
is on): its governor, retries, repair and budget apply as on the llm route. An optional second
tier (``llm_escalation_model``) is asked when the first LLM is itself unsure (its confidence
below ``second_below``) or its reply needed repair.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from batch_processor.cascade.calibration import Calibration
from batch_processor.cascade.escalation import Escalation
from batch_processor.cascade.versions import SHIPPED
from batch_processor.classifiers.base import Classifier
from batch_processor.classifiers.offline import OfflineClassifier
from batch_processor.classifiers.sentiment_model import SentimentModel
from batch_processor.conversation import Conversation
from batch_processor.models import CascadeRecord, ClassifierOutput, TokenUsage, Verdict

log = structlog.get_logger("batch_processor.cascade")

Route = Literal["offline", "llm", "audit"]


@dataclass
class CascadeState:
    """What a cascade and its twins (:meth:`CascadeClassifier.with_llm`) share and change."""

    #: The offline model version in use (``shipped``, or a learnt one).
    model_version: str = SHIPPED
    seconds_asked: int = 0
    threshold_logged: float | None = None
    #: LLM answers recorded (escalated and audited documents): the learning's new labels.
    llm_labels: int = 0


class CascadeClassifier(Classifier):
    """See the module docstring."""

    name = "cascade"

    def __init__(
        self,
        *,
        offline: OfflineClassifier,
        llm: Classifier,
        escalation: Escalation,
        second: Classifier | None = None,
        second_below: float = 0.6,
    ) -> None:
        self.offline = offline
        self.llm = llm
        self.escalation = escalation
        self.second = second
        self.second_below = second_below
        self.version = f"{offline.version}+{llm.name}{llm.version}"
        self.state = CascadeState()

    @property
    def model_version(self) -> str:
        """The offline model version in use (see :meth:`use_model`)."""
        return self.state.model_version

    def with_llm(self, llm: Classifier) -> CascadeClassifier:
        """A twin of this cascade with another LLM tier (the same one cached), sharing its state."""
        twin = copy.copy(self)
        twin.llm = llm
        return twin

    def use_model(self, version: str, model: SentimentModel, calibration: Calibration) -> None:
        """Classify with a promoted offline model version from now on."""
        self.offline.sentiment_model = model
        self.escalation.use(calibration)
        self.state.model_version = version
        log.info("offline model in use", version=version)

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """The offline answer when it is sure, else the LLM's (see the module docstring)."""
        conversation = Conversation.of(conversation)
        settled = await self.triage(conversation, metadata)
        if settled.cascade is not None and settled.cascade.route == "offline":
            return settled
        answer = await self.llm.classify(conversation, metadata)
        return await self._answered(conversation, metadata, settled, answer)

    async def triage(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """The offline answer with its cascade record; its ``route`` says if the LLM is asked.

        Counts towards the LLM share: call it once per document (the Batch API route calls
        it when it fills a slice, then :meth:`rejoin` with the batch's answer).
        """
        conversation = Conversation.of(conversation)
        output, prediction = await self.offline.weigh(conversation, metadata)
        decision = self.escalation.decide(
            max(prediction.probabilities), prediction.label, _key(conversation)
        )
        self._log_threshold(decision.threshold)
        return self._recorded(output, decision.route, decision.confidence, decision.threshold)

    async def rejoin(
        self,
        conversation: Conversation | str,
        metadata: Mapping[str, Any],
        answer: ClassifierOutput,
    ) -> ClassifierOutput:
        """The cascade's result for a document the LLM answered after its :meth:`triage`.

        The offline reading is made again (the same, unless a new model version came
        meanwhile); the offline answer stands if it is now sure (an audit), else the LLM's.
        """
        conversation = Conversation.of(conversation)
        output, prediction = await self.offline.weigh(conversation, metadata)
        sureness = max(prediction.probabilities)
        confidence, threshold, unsure = self.escalation.judge(
            sureness, prediction.label, _key(conversation)
        )
        settled = self._recorded(output, "llm" if unsure else "audit", confidence, threshold)
        return await self._answered(conversation, metadata, settled, answer)

    def _recorded(
        self, output: ClassifierOutput, route: Route, confidence: float, threshold: float
    ) -> ClassifierOutput:
        """The offline output with its cascade record."""
        offline = output.classification
        record = CascadeRecord(
            route=route,
            model=self.model_version,
            confidence=confidence,
            threshold=threshold,
            offline=Verdict(
                sentiment=offline.sentiment.label, category=offline.category, confidence=confidence
            ),
        )
        return output.model_copy(update={"cascade": record})

    async def _answered(
        self,
        conversation: Conversation,
        metadata: Mapping[str, Any],
        settled: ClassifierOutput,
        answer: ClassifierOutput,
    ) -> ClassifierOutput:
        """The result once the LLM answered: its answer (or the second tier's), or an audit."""
        record = settled.cascade
        assert record is not None
        record = record.model_copy(update={"llm": _verdict(answer)})
        self.state.llm_labels += 1
        if record.route == "llm" and self._second_wanted(answer):
            assert self.second is not None
            better = await self.second.classify(conversation, metadata)
            self.state.seconds_asked += 1
            record = record.model_copy(update={"second": _verdict(better)})
            answer = _spent(better, answer)
        if record.route == "audit":
            # The offline answer stands; the LLM's is kept to measure agreement, and paid.
            return _spent(settled, answer).model_copy(update={"cascade": record})
        return answer.model_copy(update={"cascade": record})

    def summary(self) -> dict[str, Any]:
        """The LLM tier's summary, with the cascade's routes, threshold and model version."""
        cascade: dict[str, Any] = {
            "cascade_routes": dict(self.escalation.routes),
            "cascade_threshold": self.escalation.threshold,
            "offline_model": self.model_version,
        }
        if self.second is not None:
            cascade["second_tier_asked"] = self.state.seconds_asked
        return {**self.llm.summary(), **cascade}

    async def aclose(self) -> None:
        """Close every tier."""
        try:
            await self.llm.aclose()
            if self.second is not None:
                await self.second.aclose()
        finally:
            await self.offline.aclose()

    async def flush(self) -> None:
        """Write the LLM tier's cache entries not saved yet (when it is cached)."""
        flush = getattr(self.llm, "flush", None)
        if flush is not None:
            await flush()

    async def prefetch(self, texts: Sequence[Conversation | str]) -> None:
        """The LLM tier prepares for the page (one cache query for all of it)."""
        await self.llm.prefetch(texts)

    async def warm_up(self) -> None:
        """Load the LLM tier's SDK while the first page is claimed."""
        await self.llm.warm_up()
        if self.second is not None:
            await self.second.warm_up()

    async def check_endpoint(self, within: float = 10.0) -> str | None:
        """Check the LLM tier's endpoint (see :meth:`Classifier.check_endpoint`)."""
        return await self.llm.check_endpoint(within)

    def _second_wanted(self, answer: ClassifierOutput) -> bool:
        """Whether the first LLM was unsure enough (or needed repair) to ask the second."""
        if self.second is None:
            return False
        confidence = answer.classification.confidence
        return bool(answer.repairs) or (confidence is not None and confidence < self.second_below)

    def _log_threshold(self, threshold: float) -> None:
        """Log the threshold when it first applies and when it moves by 0.02 or more."""
        last = self.state.threshold_logged
        if last is None or abs(threshold - last) >= 0.02:
            self.state.threshold_logged = threshold
            log.info(
                "cascade threshold",
                threshold=threshold,
                llm_share=self.escalation.share,
                fixed=self.escalation.fixed is not None,
                model=self.model_version,
            )


def _key(conversation: Conversation) -> str:
    """The customer's words as the audit and the tie-break read them."""
    return " ".join(conversation.customer_text.split()).casefold()


def _verdict(output: ClassifierOutput) -> Verdict:
    """A tier's answer as recorded in the cascade record."""
    classification = output.classification
    return Verdict(
        sentiment=classification.sentiment.label,
        category=classification.category,
        confidence=classification.confidence,
    )


def _spent(kept: ClassifierOutput, paid: ClassifierOutput) -> ClassifierOutput:
    """``kept`` carrying what ``paid`` cost too (both answers were paid for)."""
    usage = kept.usage
    if paid.usage is not None:
        base = usage or TokenUsage()
        usage = TokenUsage(
            input_tokens=base.input_tokens + paid.usage.input_tokens,
            output_tokens=base.output_tokens + paid.usage.output_tokens,
            cached_tokens=base.cached_tokens + paid.usage.cached_tokens,
        )
    return kept.model_copy(
        update={
            "usage": usage,
            "cost_usd": round(kept.cost_usd + paid.cost_usd, 9),
            "model": kept.model or paid.model,
            "cached": kept.cached and paid.cached,
        }
    )
