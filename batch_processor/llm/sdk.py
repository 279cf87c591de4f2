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

import asyncio
import base64
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx2
import openai
from openai import AsyncOpenAI

OpenAIError = openai.OpenAIError


def open_client(*, api_key: str, base_url: str, timeout: float, connections: int) -> AsyncOpenAI:
    """An SDK client that never retries (our policy owns retries), pooled for ``connections``.

    A user name and password in ``base_url`` (a gateway behind HTTP basic auth) are sent as
    a basic ``Authorization`` header in place of the key's bearer one: the transport refuses
    credentials in the URL beside an ``Authorization`` header.
    """
    url, headers = basic_auth(base_url)
    return AsyncOpenAI(
        api_key=api_key,
        base_url=url,
        timeout=timeout,
        max_retries=0,
        default_headers=headers or None,
        http_client=_http_client(connections, timeout),
    )


def basic_auth(base_url: str) -> tuple[str, dict[str, str]]:
    """``base_url`` without its credentials, and the basic auth header they make (or none)."""
    parts = urlsplit(base_url)
    if parts.username is None and parts.password is None:
        return base_url, {}
    host = parts.netloc.rsplit("@", 1)[1]
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}


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


# -- the Batch API (see batch_processor.llm.batch_api) -----------------------------------------


async def upload_batch_file(client: AsyncOpenAI, path: str, filename: str) -> dict[str, Any]:
    """Upload a request JSONL file for the Batch API; the file object."""
    data = await asyncio.to_thread(Path(path).read_bytes)
    created = await client.files.create(file=(filename, data), purpose="batch")
    return created.model_dump()


async def batch_files(client: AsyncOpenAI) -> list[dict[str, Any]]:
    """The account's files uploaded for batches (newest first, as the provider lists them)."""
    page = await client.files.list(purpose="batch")
    return [item.model_dump() async for item in page]


async def create_batch(
    client: AsyncOpenAI, file_id: str, window: str, metadata: dict[str, str]
) -> dict[str, Any]:
    """Create a chat-completions batch of an uploaded file; the batch object."""
    batch = await client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window=window,  # type: ignore[arg-type]
        metadata=metadata,
    )
    return batch.model_dump()


async def retrieve_batch(client: AsyncOpenAI, batch_id: str) -> dict[str, Any]:
    """The batch object of ``batch_id``."""
    return (await client.batches.retrieve(batch_id)).model_dump()


async def recent_batches(client: AsyncOpenAI, most: int) -> list[dict[str, Any]]:
    """Up to ``most`` of the account's batches, newest first."""
    found: list[dict[str, Any]] = []
    page = await client.batches.list(limit=min(100, most))
    async for batch in page:
        found.append(batch.model_dump())
        if len(found) >= most:
            break
    return found


async def cancel_batch(client: AsyncOpenAI, batch_id: str) -> dict[str, Any]:
    """Ask the provider to cancel a batch; the batch object."""
    return (await client.batches.cancel(batch_id)).model_dump()


async def file_content(client: AsyncOpenAI, file_id: str) -> bytes:
    """The bytes of a file (a batch's output or error file)."""
    response = await client.files.content(file_id)
    return response.content


async def delete_file(client: AsyncOpenAI, file_id: str) -> None:
    """Delete a file at the provider."""
    await client.files.delete(file_id)
