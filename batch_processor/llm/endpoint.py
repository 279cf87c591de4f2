"""One endpoint's requests: the SDK and client, the output mode, the budget and the governor.

:class:`Endpoint` sends one chat-completions request at a time for the
:class:`~batch_processor.llm.client.LLMClassifier`: it reserves the request's worst-case cost
against the :class:`~batch_processor.llm.cost.SpendLedger` (waiting while requests in flight
may free room), is admitted by the :class:`~batch_processor.llm.governor.Governor`, and steps
the output mode down when the endpoint rejects a ``response_format`` (``llm_output = "auto"``).
The openai SDK is loaded on demand, in a thread, and called as :mod:`batch_processor.llm.sdk`
describes; it runs with ``max_retries=0`` because retries belong to the pipeline's policy.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import structlog

from batch_processor.classifiers.taxonomy import Taxonomy
from batch_processor.errors import BudgetExhaustedError, TransientError
from batch_processor.llm.cost import SpendLedger
from batch_processor.llm.errors import ResponseFormatUnsupportedError, translate
from batch_processor.llm.governor import Governor, Outcome, ProviderLimits
from batch_processor.llm.messages import estimate_tokens, reply_text, usage_of
from batch_processor.models import OutputMode, TokenUsage

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = structlog.get_logger("batch_processor.llm.client")

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


class Endpoint:
    """Sends requests to one OpenAI-compatible endpoint; see the module docstring."""

    def __init__(
        self,
        *,
        options: LLMOptions,
        taxonomy: Taxonomy,
        governor: Governor,
        ledger: SpendLedger,
        client: AsyncOpenAI | None = None,
    ) -> None:
        self.options = options
        self.governor = governor
        self.ledger = ledger
        self.mode: OutputMode = (
            OutputMode.JSON_SCHEMA if options.output is OutputMode.AUTO else options.output
        )
        self._client = client  # opened once the SDK is loaded (see open)
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
        schema = taxonomy.json_schema()
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
                "json_schema": {"name": "classification", "strict": True, "schema": schema},
            },
            OutputMode.JSON_OBJECT: {"type": "json_object"},
        }
        self._fixed_tokens = {
            mode: len(json.dumps(self._response_format.get(mode) or "")) // 4
            + options.max_output_tokens
            for mode in OutputMode
        }

    @property
    def where(self) -> str:
        """The endpoint's base URL (OpenAI's when none is set)."""
        return self.options.base_url or OPENAI_BASE_URL

    async def open(self) -> tuple[ModuleType, AsyncOpenAI]:
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
                base_url=self.where,
                timeout=self.options.timeout,
                connections=self.options.max_connections,
            )
        return self._sdk, self._client

    async def aclose(self) -> None:
        """Close the HTTP connections (a load still in progress is abandoned)."""
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self._client is not None:
            await self._client.close()

    def body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """The request body in the output mode in use."""
        return self._body(messages, self.mode)

    def estimate(self, body: dict[str, Any]) -> int:
        """Tokens a request in the mode in use may take: its messages, the schema, the reply."""
        return self._estimate(body, self.mode)

    async def request(self, messages: list[dict[str, str]]) -> tuple[str, TokenUsage | None]:
        """One admitted request: its content and usage, or one of our errors.

        Its worst-case cost is reserved against the budget before it is sent (see
        :mod:`.cost`) and given back once its reply is counted.
        """
        sdk, client = await self.open()
        while True:
            mode = self.mode
            args = self._body(messages, mode)
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
                self.settle(reserved)
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

    def settle(self, reserved: int) -> None:
        """Give a reservation back and wake the requests waiting for room.

        The caller counts the reply's real cost before it next awaits, so no waiter sees the
        room without the cost.
        """
        self.ledger.release(reserved)
        self._budget_settled.set()

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

    def _body(self, messages: list[dict[str, str]], mode: OutputMode) -> dict[str, Any]:
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
        if self.mode is failed:
            self.mode = _STEP_DOWN[failed]
            log.warning(
                "endpoint rejected the response format; stepping down",
                rejected=failed.value,
                now_using=self.mode.value,
            )
        return True

    def _estimate(self, args: dict[str, Any], mode: OutputMode) -> int:
        return estimate_tokens(args["messages"]) + self._fixed_tokens[mode]


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """The reply body as a JSON object, or None when it is not one."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
