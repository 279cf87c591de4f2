"""The openai SDK, loaded on demand: the client we open and the one call we make.

Importing the SDK takes over a second (it builds its whole type catalogue), so this module is
imported in a thread while the first page is read and claimed (see
:meth:`~batch_processor.llm.client.LLMClassifier.warm_up`), never at start-up.

Requests go through the SDK's documented low-level ``client.post`` with a body we build and a
raw reply we parse, over the SDK's aiohttp transport with a connection pool sized to
``--concurrent``. ``chat.completions.create`` costs about twice the CPU per request: it walks
every message through the six-way message-type union to transform parameters that are already
plain JSON, and builds a pydantic ``ChatCompletion`` of which we read two fields. Errors,
authentication and timeouts are the SDK's either way.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai
from openai import AsyncOpenAI

OpenAIError = openai.OpenAIError


def open_client(*, api_key: str, base_url: str, timeout: float, connections: int) -> AsyncOpenAI:
    """An SDK client that never retries (our policy owns retries), pooled for ``connections``."""
    return AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        max_retries=0,
        http_client=_http_client(connections, timeout),
    )


async def post_chat(client: AsyncOpenAI, body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """One chat-completions request: the raw reply body and its headers.

    Errors raise the SDK's types. The headers carry the provider's rate limits.
    """
    response = await client.post("/chat/completions", body=body, cast_to=httpx2.Response)
    return response.content, dict(response.headers)


async def model_names(client: AsyncOpenAI, within: float) -> list[str]:
    """The endpoint's model list (``GET /models``): one cheap request that needs no tokens."""
    page = await client.models.list(timeout=within)
    return [model.id for model in page.data]


def _http_client(connections: int, timeout: float) -> Any:
    """The SDK's aiohttp transport with ``connections`` kept alive (httpx where it is missing)."""
    # The SDK's own Limits type, without naming the HTTP library of this SDK version.
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
        max_connections=connections, max_keepalive_connections=connections
    )
    try:
        return openai.DefaultAioHttpClient(limits=limits, timeout=timeout)
    except RuntimeError:  # the SDK was installed without its aiohttp extra
        return openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)
