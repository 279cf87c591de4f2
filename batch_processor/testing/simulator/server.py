"""The simulator's HTTP server: the chat-completions API with a provider's limits and faults."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from batch_processor.llm.governor import TokenBucket
from batch_processor.testing.simulator import replies
from batch_processor.testing.simulator.answers import KnownAnswers
from batch_processor.testing.simulator.batches import BatchAPI


@dataclass(slots=True)
class SimulatorConfig:
    """What the simulated provider does; every field is a command-line option too."""

    latency: float = 0.2
    jitter: float = 0.05
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    error_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 600.0
    malformed_rate: float = 0.0
    out_of_enum_rate: float = 0.0
    near_miss_rate: float = 0.0
    #: Share of conversations whose sentiment is answered wrong (a real model's error rate).
    wrong_label_rate: float = 0.0
    #: A labelled file whose texts are answered with their labels (a strong model that knows
    #: the answer), right for ``answers_accuracy`` of them; see :mod:`.answers`.
    answers_file: str | None = None
    answers_accuracy: float = 1.0
    api_key: str | None = None
    #: "user:password" a gateway in front of the API wants as HTTP basic auth (instead of a key).
    basic_auth: str | None = None
    models: tuple[str, ...] = ()
    context_tokens: int = 128_000
    json_schema: bool = True
    seed: int = 0
    #: Prompt caching: a prefix of at least this many tokens seen before is cached (0: never).
    cache_min_tokens: int = 1024
    #: The Batch API (``/v1/files``, ``/v1/batches``); off, those paths answer 404.
    batch_api: bool = True
    #: Seconds from a batch's creation to its completion (the 24 h window, compressed).
    batch_delay: float = 1.0
    #: Seconds a batch may take (its ``completion_window``); a longer delay expires it, with
    #: the share of lines done that the window allowed.
    batch_window: float = 3600.0
    #: Share of a batch's lines that fail (a 500 in the error file).
    batch_failed_line_rate: float = 0.0
    #: Every new batch fails validation.
    batch_invalid: bool = False
    batch_max_requests: int = 50_000
    batch_max_bytes: int = 200 * 1024 * 1024


@dataclass(slots=True)
class Simulator:
    """The simulated provider; ``async with Simulator(config) as sim`` serves on a free port."""

    config: SimulatorConfig = field(default_factory=SimulatorConfig)
    host: str = "127.0.0.1"
    port: int = 0
    script: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    requests: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    #: (arrival, status) of each completion request, for plots of throughput and 429s.
    events: list[tuple[float, int]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    keep_requests: bool = False
    _runner: web.AppRunner | None = None
    _rpm: TokenBucket | None = None
    _tpm: TokenBucket | None = None
    _random: random.Random = field(default_factory=random.Random)
    _prefixes: set[int] = field(default_factory=set)
    _known: KnownAnswers | None = field(init=False, default=None)
    batches: BatchAPI = field(init=False)

    def __post_init__(self) -> None:
        self.batches = BatchAPI(self)
        if self.config.answers_file is not None:
            self._known = KnownAnswers.load(
                Path(self.config.answers_file),
                accuracy=self.config.answers_accuracy,
                seed=self.config.seed,
            )

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of this server."""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0: a free one, then stored in :attr:`port`)."""
        self._random.seed(self.config.seed)
        # The provider's buckets hold one second's worth, as real providers' limits do.
        now = time.monotonic()
        rpm, tpm = self.config.rpm, self.config.tpm
        self._rpm = TokenBucket(per_minute=rpm, burst_seconds=1.0, now=now) if rpm else None
        self._tpm = TokenBucket(per_minute=tpm, burst_seconds=1.0, now=now) if tpm else None
        # Batch request files are up to 200 MB (aiohttp refuses bodies over 1 MB by default).
        app = web.Application(client_max_size=self.config.batch_max_bytes + 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/events", self._events)
        if self.config.batch_api:
            self.batches.route(app)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving (hanging requests are cancelled)."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def snapshot(self) -> dict[str, Any]:
        """Counters by outcome, the most requests in flight at once, first and last arrival."""
        span = {}
        if self.arrivals:
            # Wall-clock times, so that another process can line them up with its own.
            offset = time.time() - time.monotonic()
            span = {
                "first_arrival": self.arrivals[0] + offset,
                "last_arrival": self.arrivals[-1] + offset,
            }
        batches = dict(self.batches.stats)
        return {**dict(self.stats), **batches, "max_in_flight": self.max_in_flight, **span}

    # -- handlers ------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        names = self.config.models or ("simulated",)
        return web.json_response({"object": "list", "data": [{"id": n} for n in names]})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _events(self, request: web.Request) -> web.Response:
        """Each request's wall-clock arrival and status (``?since=`` a wall-clock time)."""
        offset = time.time() - time.monotonic()
        since = float(request.query.get("since", "0"))
        events = [(round(t + offset, 4), s) for t, s in self.events if t + offset >= since]
        return web.json_response({"events": events})

    async def _completions(self, request: web.Request) -> web.Response:
        arrival = time.monotonic()
        status = 499  # the client went away (the handler was cancelled)
        try:
            response = await self._completion(request, arrival)
            status = response.status
            return response
        finally:
            self.events.append((arrival, status))

    async def _completion(self, request: web.Request, arrival: float) -> web.Response:
        self.stats["requests"] += 1
        self.arrivals.append(arrival)
        body = await request.json()
        if self.keep_requests:
            self.requests.append(body)
        refused = self._refuse(request, body)
        if refused is not None:
            return refused
        forced = self.script.pop(0) if self.script else None
        if forced is not None and forced.startswith("status:"):
            return self._error(int(forced.split(":")[1]), "scripted", "Scripted failure.")
        if forced == "500" or (forced is None and self.chance(self.config.error_rate)):
            await asyncio.sleep(self.config.latency / 4)
            return self._error(500, "server_error", "The server had an error (simulated).")
        prompt_tokens = replies.prompt_tokens(body)
        limited = self._limit(prompt_tokens, forced)
        if limited is not None:
            return limited
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(body, prompt_tokens, forced)
        finally:
            self.in_flight -= 1

    def _refuse(self, request: web.Request, body: dict[str, Any]) -> web.Response | None:
        """Configuration and request errors, checked before any limit (as real APIs do)."""
        key = self.config.api_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return self._error(401, "invalid_api_key", "Incorrect API key provided.")
        gate = self.config.basic_auth
        if gate is not None and request.headers.get("Authorization") != "Basic " + (
            base64.b64encode(gate.encode()).decode()
        ):
            return self._error(401, "invalid_api_key", "The gateway wants basic auth.")
        if self.config.models and body.get("model") not in self.config.models:
            return self._error(
                404, "model_not_found", f"The model {body.get('model')!r} does not exist."
            )
        fmt = (body.get("response_format") or {}).get("type")
        if fmt == "json_schema" and not self.config.json_schema:
            return self._error(
                400,
                "invalid_request_error",
                "response_format json_schema is not supported",
                param="response_format",
            )
        tokens = replies.prompt_tokens(body)
        if tokens > self.config.context_tokens:
            return self._error(
                400,
                "context_length_exceeded",
                f"This model's maximum context length is {self.config.context_tokens} tokens. "
                f"However, your messages resulted in {tokens} tokens.",
                param="messages",
            )
        return None

    def _limit(self, prompt_tokens: int, forced: str | None) -> web.Response | None:
        """429 when the concurrency, RPM or TPM limit is reached (or the script says so)."""
        if forced is not None and forced.startswith("429"):
            wait = float(forced.split(":", 1)[1]) if ":" in forced else 1.0
            return self._rate_limited(wait, "requests")
        limit = self.config.max_concurrency
        if limit is not None and self.in_flight >= limit:
            return self._rate_limited(self.config.latency / 2, "concurrency")
        if self._rpm is not None and (wait := _admit(self._rpm, 1)) > 0:
            return self._rate_limited(wait, "requests")
        if self._tpm is not None and (wait := _admit(self._tpm, prompt_tokens)) > 0:
            return self._rate_limited(wait, "tokens")
        return None

    async def _answer(
        self, body: dict[str, Any], prompt_tokens: int, forced: str | None
    ) -> web.Response:
        config = self.config
        await asyncio.sleep(max(0.0, config.latency + self._random.uniform(-1, 1) * config.jitter))
        if forced == "hang" or (forced is None and self.chance(config.hang_rate)):
            self.stats["hang"] += 1
            await asyncio.sleep(config.hang_seconds)
        return web.json_response(
            self.completion(body, prompt_tokens, forced), headers=self._limit_headers()
        )

    def completion(
        self, body: dict[str, Any], prompt_tokens: int, forced: str | None = None
    ) -> dict[str, Any]:
        """The chat completion for ``body``, with this provider's faults (no waiting)."""
        config = self.config
        if forced == "malformed" or (forced is None and self.chance(config.malformed_rate)):
            self.stats["malformed"] += 1
            content = '{"category": "billing", "sentiment": '  # cut off mid-object
        else:
            out_of_enum = forced == "out_of_enum" or (
                forced is None and self.chance(config.out_of_enum_rate)
            )
            reply = replies.classification_reply(
                body,
                out_of_enum=out_of_enum,
                stats=self.stats,
                wrong_rate=config.wrong_label_rate,
                known=self._known,
            )
            near_miss = forced == "near_miss" or (
                forced is None and self.chance(config.near_miss_rate)
            )
            if near_miss:
                self.stats["near_miss"] += 1
                reply = replies.near_miss(reply, self._random)
            content = json.dumps(reply)
        self.stats["ok"] += 1
        completion_tokens = max(1, len(content) // 4)
        cached = replies.cached_prefix(body, self._prefixes, self.config.cache_min_tokens)
        return {
            "id": f"chatcmpl-sim{self.stats['requests']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "simulated"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }

    def _limit_headers(self) -> dict[str, str]:
        """The limits and what is left of them, on every answer (as OpenAI sends them)."""
        headers = {}
        now = time.monotonic()
        for kind, bucket, limit in (
            ("requests", self._rpm, self.config.rpm),
            ("tokens", self._tpm, self.config.tpm),
        ):
            if bucket is not None and limit:
                bucket.take(0, now)  # refill to now
                headers[f"x-ratelimit-limit-{kind}"] = str(limit)
                headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
        return headers

    def _rate_limited(self, wait: float, kind: str) -> web.Response:
        self.stats["429"] += 1
        self.stats[f"429_{kind}"] += 1
        headers = {
            "retry-after": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(max(1, round(wait * 1000))),
            f"x-ratelimit-remaining-{'tokens' if kind == 'tokens' else 'requests'}": "0",
            f"x-ratelimit-reset-{'tokens' if kind == 'tokens' else 'requests'}": f"{wait:.3f}s",
        }
        return self._error(
            429, "rate_limit_exceeded", f"Rate limit reached ({kind}).", headers=headers
        )

    def _error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        if status != 429:
            self.stats[str(status)] += 1
        error = {"message": message, "type": code, "param": param, "code": code}
        return web.json_response({"error": error}, status=status, headers=headers)

    def chance(self, rate: float) -> bool:
        """True with probability ``rate`` (seeded: a run repeats)."""
        return rate > 0 and self._random.random() < rate


def _admit(bucket: TokenBucket, amount: float) -> float:
    """Take ``amount`` now and return 0.0, or return the seconds until it would be there."""
    now = time.monotonic()
    wait = bucket.wait(amount, now)
    if wait == 0.0:
        bucket.take(amount, now)
    return wait
