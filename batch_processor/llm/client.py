"""The LLM classifier: any OpenAI-compatible endpoint, validated structured output.

Each conversation is sent as data (a JSON object in the user message), never spliced into the
instructions. The reply is requested as strict JSON-schema output; endpoints that lack it get
JSON mode, then plain instructions (``llm_output = "auto"`` steps down when the endpoint rejects
a ``response_format``). Every reply is validated against the taxonomy; an invalid one is asked
again (with what was wrong) at most ``reasks`` times, then the document goes to the classify
retry queue. A context-length 400 shortens the text once. Each request goes through the
:class:`~batch_processor.llm.endpoint.Endpoint` (budget, governor, output mode, the SDK).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

import structlog

from batch_processor.classifiers.base import Classifier
from batch_processor.classifiers.taxonomy import Taxonomy
from batch_processor.conversation import Conversation
from batch_processor.errors import (
    ConfigurationError,
    InvalidReplyError,
    TransientError,
    describe,
)
from batch_processor.llm.cost import SpendLedger
from batch_processor.llm.endpoint import Endpoint, LLMOptions
from batch_processor.llm.errors import ContextTooLongError, translate
from batch_processor.llm.governor import Governor
from batch_processor.llm.messages import (
    conversation_messages,
    feedback_messages,
    reply_text,
    shorten,
    usage_of,
)
from batch_processor.llm.reply import read_reply, reply_limits
from batch_processor.models import Classification, ClassifierOutput, TokenUsage
from batch_processor.redaction import redact_text

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = structlog.get_logger("batch_processor.llm.client")

#: Version of the prompt and reply protocol; stored with results and part of the cache key.
PROMPT_VERSION = "2"


class LLMClassifier(Classifier):
    """Classifies with a chat-completions model; see the module docstring."""

    name = "llm"
    version = PROMPT_VERSION

    def __init__(
        self,
        *,
        options: LLMOptions,
        taxonomy: Taxonomy,
        governor: Governor,
        ledger: SpendLedger,
        client: AsyncOpenAI | None = None,
    ) -> None:
        if options.api_key is None and options.base_url is None:
            raise ConfigurationError(
                "invalid setting llm_api_key (BATCH_PROCESSOR_LLM_API_KEY, or a secrets file named "
                "llm_api_key): the llm classifier needs an API key for OpenAI; set "
                "llm_base_url for a local server that needs none"
            )
        self.options = options
        self.taxonomy = taxonomy
        self.governor = governor
        self.ledger = ledger
        self.endpoint = Endpoint(
            options=options, taxonomy=taxonomy, governor=governor, ledger=ledger, client=client
        )
        self.replies_repaired = 0
        self.repairs: Counter[str] = Counter()
        self._limits = reply_limits(taxonomy)

    @property
    def cache_scope(self) -> str:
        """What a cached result depends on besides the text: model, taxonomy, prompt."""
        return f"{self.options.model}|{self.taxonomy.name}@{self.taxonomy.version}|{PROMPT_VERSION}"

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """Classify the conversation's customer; raise our error types (see :mod:`.errors`)."""
        conversation = Conversation.of(conversation)
        shortened = False
        messages = conversation_messages(conversation, metadata)
        asks = 0
        problem = ""
        while asks <= self.options.reasks:
            try:
                content, usage = await self.endpoint.request(messages)
            except ContextTooLongError as exc:
                if shortened or conversation.chars < 200:
                    raise
                conversation = shorten(conversation, exc.limit, exc.used)
                shortened = True
                log.info("text shortened to fit the model's context", chars=conversation.chars)
                messages = conversation_messages(conversation, metadata)
                continue
            asks += 1
            try:
                classification, repairs = read_reply(
                    self.taxonomy, content, self._limits, conversation.turn_counts()
                )
            except ValueError as exc:
                problem = str(exc)
                self.ledger.record(usage, wasted=True)
                log.info("invalid reply, asking again", problem=problem[:200], ask=asks)
                messages = [*messages, *feedback_messages(content, problem)]
                continue
            return self._output(
                classification, repairs, usage, self.ledger.record(usage), shortened
            )
        raise InvalidReplyError(f"reply still invalid after {asks} asks: {problem[:300]}")

    # -- the Batch API route (see batch_processor.llm.batch_api) ---------------------------

    async def sdk_client(self) -> tuple[ModuleType, AsyncOpenAI]:
        """The loaded SDK module and the open client (for the Batch API route)."""
        return await self.endpoint.open()

    def batch_body(self, conversation: Conversation, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The request body the online route would send: same prompt and schema."""
        return self.endpoint.body(conversation_messages(conversation, metadata))

    def batch_reservation(self, body: dict[str, Any]) -> int | None:
        """Reserve a batch request's worst-case cost (at the batch price) against the budget.

        Returns the nano-dollars reserved (0 without a budget or a price), or None when the
        budget cannot cover it: the slice then ends before this request.
        """
        estimate = self.endpoint.estimate(body)
        reply = self.options.max_output_tokens
        usage = TokenUsage(input_tokens=max(0, estimate - reply), output_tokens=reply)
        cost = self.ledger.worst_case(usage, batch=True)
        if self.ledger.reserve(cost) is not True:
            return None
        return cost

    def release_reservation(self, amount: int) -> None:
        """Give back a batch reservation (its cost is counted); online requests waiting wake."""
        self.endpoint.settle(amount)

    def read_batch_reply(
        self, response: Mapping[str, Any], turns: Mapping[str, int] | None = None
    ) -> ClassifierOutput:
        """A Batch API line's chat completion, validated and repaired as an online reply is.

        ``turns`` are the conversation's turns by speaker (see :func:`.reply.read_reply`).
        Its cost is counted at the batch price. Raises InvalidReplyError when it is not a
        valid classification (the caller classifies the document online).
        """
        usage = usage_of(response)
        try:
            classification, repairs = read_reply(
                self.taxonomy, reply_text(response), self._limits, turns
            )
        except ValueError as exc:
            self.ledger.record(usage, wasted=True, batch=True)
            raise InvalidReplyError(f"batch reply invalid: {str(exc)[:300]}") from None
        cost = self.ledger.record(usage, batch=True)
        return self._output(classification, repairs, usage, cost, shortened=False)

    def summary(self) -> dict[str, Any]:
        """Tokens, cost, the governor's state and the output mode in use."""
        return {
            **self.ledger.summary(),
            "replies_repaired": self.replies_repaired,
            "repairs_by_field": dict(sorted(self.repairs.items())),
            "model": self.options.model,
            "output_mode": self.endpoint.mode.value,
            "governor": self.governor.snapshot(),
        }

    async def check_endpoint(self, within: float = 10.0) -> str | None:
        """Ask the endpoint for its models once; raise if it cannot answer at all.

        Raises TransientError when nothing answers there (no server, a wrong host: the caller
        decides whether to wait) and ConfigurationError when the key is refused, each with one
        line naming the endpoint and the cause. Returns a warning when
        it answers but does not list the configured model (some gateways list none), else None.
        A 404 (an endpoint without ``/models``) or a 5xx still shows a server is there.
        """
        sdk, client = await self.endpoint.open()
        try:
            names = await sdk.model_names(client, within)
        except sdk.OpenAIError as exc:
            error = translate(exc, timeout=within).error
            status = getattr(exc, "status_code", None)
            message = (
                f"the LLM endpoint {redact_text(self.endpoint.where)} cannot be used: "
                f"{describe(error)}"
            )
            if status is None:
                raise TransientError(message) from None
            if status in {401, 403}:
                raise ConfigurationError(message) from None
            return None  # a server answered: the first request will say the rest
        if names and self.options.model not in names:
            shown = ", ".join(sorted(names)[:8])
            return f"the endpoint does not list the model {self.options.model!r} (it lists {shown})"
        return None

    async def warm_up(self) -> None:
        """Load the openai SDK (in a thread: it takes over a second) and open the client.

        The runner starts this at once, so that the import overlaps connecting, reading and
        claiming the first page; the first request waits for it if it has not finished.
        """
        await self.endpoint.open()

    async def aclose(self) -> None:
        """Close the HTTP connections (a load still in progress is abandoned)."""
        await self.endpoint.aclose()

    def _output(
        self,
        classification: Classification,
        repairs: list[str],
        usage: TokenUsage | None,
        cost: float,
        shortened: bool,
    ) -> ClassifierOutput:
        """A validated reply as the classifier's output; its repairs are counted."""
        if repairs:
            self.repairs.update(repairs)
            self.replies_repaired += 1
        return ClassifierOutput(
            repairs=tuple(repairs),
            classification=classification,
            usage=usage,
            cost_usd=cost,
            truncated=shortened,
            model=self.options.model,
            taxonomy_version=self.taxonomy.version,
        )
