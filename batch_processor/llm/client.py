"""The LLM classifier: any OpenAI-compatible endpoint, validated structured output.

Each conversation is sent as data (a JSON object in the user message), never spliced into the
instructions. The reply is requested as strict JSON-schema output; endpoints that lack it get
JSON mode, then plain instructions (``llm_output = "auto"`` steps down when the endpoint rejects
a ``response_format``). Every reply is validated against the taxonomy; an invalid one is asked
again (with what was wrong) at most ``reasks`` times, then the document goes to the classify
retry queue. A context-length 400 shortens the text once. Requests are admitted by the
:class:`~batch_processor.llm.governor.Governor`; usage and cost go to the
:class:`~batch_processor.llm.cost.SpendLedger`, which also stops new requests at the budget.

The SDK runs with ``max_retries=0``: retries belong to the pipeline's policy alone. It is
loaded on demand, in a thread (:meth:`LLMClassifier.warm_up`), and called as described in
:mod:`batch_processor.llm.sdk`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import structlog

from batch_processor.classifiers.base import Classifier
from batch_processor.classifiers.taxonomy import Taxonomy
from batch_processor.conversation import Conversation
from batch_processor.errors import (
    BudgetExhaustedError,
    ConfigurationError,
    InvalidReplyError,
    TransientError,
    describe,
)
from batch_processor.llm.cost import SpendLedger
from batch_processor.llm.errors import (
    ContextTooLongError,
    ResponseFormatUnsupportedError,
    translate,
)
from batch_processor.llm.governor import Governor, Outcome, ProviderLimits
from batch_processor.llm.messages import (
    conversation_messages,
    estimate_tokens,
    feedback_messages,
    reply_text,
    shorten,
    usage_of,
)
from batch_processor.llm.reply import read_reply, reply_limits
from batch_processor.models import Classification, ClassifierOutput, OutputMode, TokenUsage
from batch_processor.redaction import redact_text

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = structlog.get_logger("batch_processor.llm.client")

#: Version of the prompt and reply protocol; stored with results and part of the cache key.
PROMPT_VERSION = "2"
OPENAI_BASE_URL = "https://api.openai.com/v1"


_STEP_DOWN = {
    OutputMode.JSON_SCHEMA: OutputMode.JSON_OBJECT,
    OutputMode.JSON_OBJECT: OutputMode.PROMPT,
}


@dataclass(frozen=True, slots=True)
class LLMOptions:
    """The endpoint and request settings (see the ``llm_*`` settings for their defaults)."""

    model: str
    api_key: str | None
    base_url: str | None
    timeout: float
    output: OutputMode
    reasks: int
    max_output_tokens: int
    temperature: float | None
    max_connections: int  # the HTTP pool: --concurrent, so every request has a connection


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
                "invalid setting llm_api_key (BATCH_LLM_API_KEY, or a secrets file named "
                "llm_api_key): the llm classifier needs an API key for OpenAI; set "
                "llm_base_url for a local server that needs none"
            )
        self.options = options
        self.taxonomy = taxonomy
        self.governor = governor
        self.ledger = ledger
        self.replies_repaired = 0
        self.repairs: Counter[str] = Counter()
        self._mode: OutputMode = (
            OutputMode.JSON_SCHEMA if options.output is OutputMode.AUTO else options.output
        )
        self._client = client  # opened once the SDK is loaded (see warm_up)
        self._sdk: ModuleType | None = None
        self._loading: asyncio.Future[ModuleType] | None = None
        self._budget_settled = asyncio.Event()  # set when a reservation is given back
        self._token_param = (
            "max_completion_tokens"
            if options.base_url is None or "openai.azure.com" in options.base_url
            else "max_tokens"
        )
        # Built once and shared by every request: the instructions (with the schema, unless
        # it travels as the response_format), the response formats and their token cost.
        self._schema = taxonomy.json_schema()
        self._limits = reply_limits(taxonomy)
        self._system = {
            mode: {
                "role": "system",
                "content": taxonomy.instructions(include_schema=mode is not OutputMode.JSON_SCHEMA),
            }
            for mode in OutputMode
        }
        self._response_format: dict[OutputMode, dict[str, Any]] = {
            OutputMode.JSON_SCHEMA: {
                "type": "json_schema",
                "json_schema": {"name": "classification", "strict": True, "schema": self._schema},
            },
            OutputMode.JSON_OBJECT: {"type": "json_object"},
        }
        self._fixed_tokens = {
            mode: len(json.dumps(self._response_format.get(mode) or "")) // 4
            + options.max_output_tokens
            for mode in OutputMode
        }

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
                content, usage = await self._request(messages)
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
            if repairs:
                self.repairs.update(repairs)
                self.replies_repaired += 1
            return self._output(classification, usage, shortened, repairs)
        raise InvalidReplyError(f"reply still invalid after {asks} asks: {problem[:300]}")

    # -- the Batch API route (see batch_processor.llm.batch_api) ---------------------------

    async def sdk_client(self) -> tuple[ModuleType, AsyncOpenAI]:
        """The loaded SDK module and the open client (for the Batch API route)."""
        return await self._open()

    def batch_body(self, conversation: Conversation, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The request body the online route would send: same prompt and schema."""
        return self._request_args(conversation_messages(conversation, metadata), self._mode)

    def batch_reservation(self, body: dict[str, Any]) -> int | None:
        """Reserve a batch request's worst-case cost (at the batch price) against the budget.

        Returns the nano-dollars reserved (0 without a budget or a price), or None when the
        budget cannot cover it: the slice then ends before this request.
        """
        estimate = self._estimate(body, self._mode)
        reply = self.options.max_output_tokens
        usage = TokenUsage(input_tokens=max(0, estimate - reply), output_tokens=reply)
        cost = self.ledger.worst_case(usage, batch=True)
        if self.ledger.reserve(cost) is not True:
            return None
        return cost

    def release_reservation(self, amount: int) -> None:
        """Give back a batch reservation (its cost is counted); online requests waiting wake."""
        self._settle(amount)

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
        if repairs:
            self.repairs.update(repairs)
            self.replies_repaired += 1
        cost = self.ledger.record(usage, batch=True)
        return ClassifierOutput(
            repairs=tuple(repairs),
            classification=classification,
            usage=usage,
            cost_usd=cost,
            model=self.options.model,
            taxonomy_version=self.taxonomy.version,
        )

    def summary(self) -> dict[str, Any]:
        """Tokens, cost, the governor's state and the output mode in use."""
        return {
            **self.ledger.summary(),
            "replies_repaired": self.replies_repaired,
            "repairs_by_field": dict(sorted(self.repairs.items())),
            "model": self.options.model,
            "output_mode": self._mode.value,
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
        sdk, client = await self._open()
        where = self.options.base_url or OPENAI_BASE_URL
        try:
            names = await sdk.model_names(client, within)
        except sdk.OpenAIError as exc:
            error = translate(exc, timeout=within).error
            status = getattr(exc, "status_code", None)
            message = f"the LLM endpoint {redact_text(where)} cannot be used: {describe(error)}"
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
        await self._open()

    async def aclose(self) -> None:
        """Close the HTTP connections (a load still in progress is abandoned)."""
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self._client is not None:
            await self._client.close()

    async def _open(self) -> tuple[ModuleType, AsyncOpenAI]:
        """The SDK module and the client, loading them the first time."""
        if self._sdk is None:
            if self._loading is None:
                self._loading = asyncio.ensure_future(
                    asyncio.to_thread(importlib.import_module, "batch_processor.llm.sdk")
                )
            # Shielded: a caller cancelled while waiting does not cancel the others' load.
            self._sdk = await asyncio.shield(self._loading)
        if self._client is None:
            self._client = self._sdk.open_client(
                api_key=self.options.api_key or "not-needed",
                base_url=self.options.base_url or OPENAI_BASE_URL,
                timeout=self.options.timeout,
                connections=self.options.max_connections,
            )
        return self._sdk, self._client

    # -- one request ---------------------------------------------------------------------

    async def _request(self, messages: list[dict[str, str]]) -> tuple[str, TokenUsage | None]:
        """One admitted request: its content and usage, or one of our errors.

        Its worst-case cost is reserved against the budget before it is sent (see
        :mod:`.cost`) and given back once its reply is counted.
        """
        sdk, client = await self._open()
        while True:
            mode = self._mode
            args = self._request_args(messages, mode)
            estimate = self._estimate(args, mode)
            reserved = await self._reserve(estimate)
            try:
                permit = await self.governor.acquire(estimate)
                try:
                    raw, headers = await sdk.post_chat(client, args)
                except sdk.OpenAIError as exc:
                    translated = translate(exc, timeout=self.options.timeout)
                    error = translated.error
                    self.governor.release(
                        permit,
                        Outcome.OVERLOADED if translated.overloaded else Outcome.NEUTRAL,
                        used_tokens=0,
                        retry_after=error.retry_after if translated.overloaded else None,
                        unserved=translated.unserved,
                    )
                    if isinstance(error, ResponseFormatUnsupportedError) and self._step_down(mode):
                        continue
                    raise error from None
                except BaseException:
                    self.governor.release(permit, Outcome.NEUTRAL)
                    raise
            finally:
                self._settle(reserved)
            response = _json_object(raw)
            usage = usage_of(response)
            self.governor.release(
                permit,
                Outcome.SUCCESS,
                used_tokens=usage.total if usage else None,
                limits=ProviderLimits.from_headers(headers),
            )
            if response is None:
                raise TransientError(f"the endpoint answered with no JSON object: {raw[:120]!r}")
            return reply_text(response), usage

    async def _reserve(self, estimate: int) -> int:
        """Reserve a request's worst-case cost; wait while requests in flight might free room.

        Raises BudgetExhaustedError once the budget cannot cover another request.
        """
        prompt = max(0, estimate - self.options.max_output_tokens)
        usage = TokenUsage(input_tokens=prompt, output_tokens=self.options.max_output_tokens)
        cost = self.ledger.worst_case(usage)
        while (fits := self.ledger.reserve(cost)) is False:
            # Cleared right after the check, with no await between: no settle is missed.
            self._budget_settled.clear()
            await self._budget_settled.wait()
        if fits is None:
            if self.ledger.first_exhaustion():
                log.warning("budget reached: no new LLM requests", **self.ledger.summary())
            raise BudgetExhaustedError("the run's budget (--budget-usd) is spent")
        return cost

    def _settle(self, reserved: int) -> None:
        """Give a reservation back and wake the requests waiting for room.

        The caller counts the reply's real cost before it next awaits, so no waiter sees the
        room without the cost.
        """
        self.ledger.release(reserved)
        self._budget_settled.set()

    def _request_args(self, messages: list[dict[str, str]], mode: OutputMode) -> dict[str, Any]:
        """The request body; the instructions and schema are shared objects, built once."""
        args: dict[str, Any] = {
            "model": self.options.model,
            "messages": [self._system[mode], *messages],
            self._token_param: self.options.max_output_tokens,
        }
        if self.options.temperature is not None:
            args["temperature"] = self.options.temperature
        response_format = self._response_format.get(mode)
        if response_format is not None:
            args["response_format"] = response_format
        return args

    def _step_down(self, failed: OutputMode) -> bool:
        """In auto mode, use the next output mode after the endpoint rejected ``failed``."""
        if self.options.output is not OutputMode.AUTO or failed not in _STEP_DOWN:
            return False
        if self._mode is failed:
            self._mode = _STEP_DOWN[failed]
            log.warning(
                "endpoint rejected the response format; stepping down",
                rejected=failed.value,
                now_using=self._mode.value,
            )
        return True

    def _estimate(self, args: dict[str, Any], mode: OutputMode) -> int:
        """Tokens a request may use: its messages, a schema sent as response_format, the reply."""
        return estimate_tokens(args["messages"]) + self._fixed_tokens[mode]

    # -- prompts and results -------------------------------------------------------------

    def _output(
        self,
        classification: Classification,
        usage: TokenUsage | None,
        shortened: bool,
        repairs: list[str],
    ) -> ClassifierOutput:
        cost = self.ledger.record(usage)
        return ClassifierOutput(
            repairs=tuple(repairs),
            classification=classification,
            usage=usage,
            cost_usd=cost,
            truncated=shortened,
            model=self.options.model,
            taxonomy_version=self.taxonomy.version,
        )


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """The reply body as a JSON object, or None when it is not one."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
